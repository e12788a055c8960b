"""Multi-label CSV manifests: 0/1 columns to bitmasks, refusals, the split record, folds stratified by label."""

from __future__ import annotations

from collections import Counter

import pytest

from fptplus.config import DataConfig
from fptplus.data.folds import assign_folds
from fptplus.data.index import label_bits
from fptplus.errors import DataError
from imagegen import class_folders, multilabel_csv, rgb, save, write_csv


def test_columns_become_bitmasks_and_the_manifest_round_trips(tmp_path):
    data = multilabel_csv(tmp_path / "d")
    index = DataConfig(data=str(data), label_columns=["A", "B", "C"]).load_index()
    assert index.multilabel and index.classes == ["A", "B", "C"]
    rows = (data.read_text()).splitlines()[1:]
    for s, row in zip(index.samples, rows, strict=True):
        a, b, c = (int(v) for v in row.split(",")[1:4])
        assert label_bits([s.label], 3)[0].tolist() == [a, b, c]
    assert index.counts()["test"] == [4, 4, 4] and "multi-label" in index.describe()
    index.write_csv(tmp_path / "splits.csv")
    again = DataConfig(data=str(tmp_path / "splits.csv"), label_columns=["a", "b", "c"]).load_index()
    assert [(s.label, s.split) for s in again.samples] == [(s.label, s.split) for s in index.samples]


def test_bad_values_missing_columns_and_constant_labels_are_refused(tmp_path):
    save(tmp_path / "a.png", rgb())
    save(tmp_path / "b.png", rgb(seed=1))
    rows = [{"path": "a.png", "A": "1", "B": "maybe"}, {"path": "b.png", "A": "0", "B": "2"}]
    bad = write_csv(tmp_path / "bad.csv", rows, ["path", "A", "B"])
    with pytest.raises(DataError, match=r"must hold 0/1.*line 2, column 'b': 'maybe'.*line 3, column 'b': '2'"):
        DataConfig(data=str(bad), label_columns=["A", "B"]).load_index()
    with pytest.raises(DataError, match=r"missing \['C'\]"):
        DataConfig(data=str(bad), label_columns=["A", "C"]).load_index()
    with pytest.raises(DataError, match="at least 2"):
        DataConfig(data=str(bad), label_columns=["A"]).load_index()
    folder = class_folders(tmp_path / "cf", {"x": 4, "y": 4})
    with pytest.raises(DataError, match=r"not a \.csv file"):
        DataConfig(data=str(folder), label_columns=["x", "y"]).load_index()
    rows = [{"path": f"i{i}.png", "A": i % 2, "B": 1 if split == "test" else i % 2, "split": split}
            for i, split in enumerate(["train"] * 6 + ["val"] * 2 + ["test"] * 2)]  # fmt: skip
    for r in rows:
        save(tmp_path / r["path"], rgb(seed=hash(r["path"]) % 1000))
    const = write_csv(tmp_path / "const.csv", rows, ["path", "A", "B", "split"])
    with pytest.raises(DataError, match="label 'B' is present in every image of test"):
        DataConfig(data=str(const), label_columns=["A", "B"]).load_index()
    assert DataConfig(data=str(const), label_columns=["A", "B"], allow_missing_classes=True).load_index().multilabel


def test_folds_stratify_on_the_rarest_present_label(tmp_path):
    data = multilabel_csv(tmp_path / "d", repeats=(4, 1, 1))
    index = DataConfig(data=str(data), label_columns=["A", "B", "C"]).load_index()
    folds = assign_folds(index.samples, 4, 0, index.classes, index.strata())
    for j in range(3):  # each label's positives spread over the folds
        per = Counter(f for s, f in zip(index.samples, folds, strict=True) if f is not None and (s.label >> j) & 1)
        assert len(per) == 4 and max(per.values()) - min(per.values()) <= 2

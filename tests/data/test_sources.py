"""Dataset sources: the three layouts, automatic stratified/grouped splits, and refusals."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from fptplus.data.sources import DataError, assign_splits, load_index
from imagegen import class_folders, rgb, save, split_folders, write_csv


def test_split_folders(tmp_path):
    root = split_folders(
        tmp_path / "ds",
        {"train": {"a": 3, "b": 2}, "val": {"a": 1, "b": 1}, "test": {"a": 1, "b": 2}},
    )
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    (root / "train" / "a" / ".DS_Store").write_bytes(b"x")
    index = load_index(root)
    assert index.classes == ["a", "b"]
    assert index.counts() == {"train": [3, 2], "val": [1, 1], "test": [1, 2]}
    assert index.ignored == ["train/a/notes.txt"]
    assert {s.path for s in index.split("val")} == {"val/a/img0.png", "val/b/img0.png"}
    assert "split folders" in index.source and "train" in index.describe()


def test_split_folder_aliases_and_missing_split(tmp_path):
    root = split_folders(
        tmp_path / "ds", {"train": {"a": 3, "b": 3}, "valid": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}}
    )
    assert load_index(root).counts()["val"] == [1, 1]
    only = split_folders(tmp_path / "ds2", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    with pytest.raises(DataError, match=r"lacks \['val'\]"):
        load_index(only)


def test_class_folders_auto_split_is_stratified_and_reproducible(tmp_path):
    root = class_folders(tmp_path / "ds", {"neg": 30, "pos": 10})
    a, b, c = load_index(root, seed=1), load_index(root, seed=1), load_index(root, seed=2)
    assert a.samples == b.samples and a.samples != c.samples
    assert a.counts() == {"train": [21, 7], "val": [3, 1], "test": [6, 2]}
    assert len({s.path for s in a.samples}) == 40  # img0.png of both classes stay distinct


def test_split_written_and_reloaded_identically(tmp_path):
    root = class_folders(tmp_path / "ds", {"neg": 6, "pos": 5})
    index = load_index(root, seed=3)
    index.write_csv(root / "splits.csv")
    again = load_index(root / "splits.csv")
    assert again.classes == index.classes
    want = [(index.abspath(s).resolve().as_posix(), s.label, s.split) for s in index.samples]
    assert [(s.path, s.label, s.split) for s in again.samples] == want
    assert "official split" in again.source


def test_csv_with_official_split_extra_columns_and_numeric_labels(tmp_path):
    rows = []
    for i in range(12):
        save(tmp_path / "img" / f"{i}.png", rgb(seed=i))
        rows.append({"path": f"img/{i}.png", "label": str([0, 2, 10][i % 3]), "split": "train" if i < 9 else "test",
                     "age": 50 + i})  # fmt: skip
    for i in range(9, 12):
        rows[i - 9 + 3]["split"] = "val"
    csv_path = write_csv(tmp_path / "labels.csv", rows, ["path", "label", "split", "age"])
    index = load_index(csv_path)
    assert index.classes == ["0", "2", "10"]  # numeric order, not "10" < "2"
    assert index.samples[2].label == 2 and index.samples[0].label == 0


def test_csv_groups_never_cross_splits(tmp_path):
    rows, groups = [], {}
    for i in range(90):
        patient = f"p{i // 3}"  # 30 patients, 3 images each
        label = "sick" if (i // 3) % 3 == 0 else "well"
        save(tmp_path / f"{i}.png", rgb(8, 8, seed=i))
        rows.append({"path": f"{i}.png", "label": label, "group": patient})
        groups[f"{i}.png"] = patient
    index = load_index(write_csv(tmp_path / "m.csv", rows, ["path", "label", "group"]), seed=5)
    split_of_group = defaultdict(set)
    for s in index.samples:
        split_of_group[s.group].add(s.split)
    assert all(len(v) == 1 for v in split_of_group.values())
    counts = Counter(s.split for s in index.samples)
    assert counts["train"] == 63 and counts["val"] == 9 and counts["test"] == 18
    assert "grouped" in index.source


def test_assign_splits_small_classes():
    with pytest.raises(DataError, match="class 'rare' has 2"):
        assign_splits([0] * 10 + [1, 1], [None] * 12, seed=0, class_names=["common", "rare"])
    splits = assign_splits([0] * 3, [None] * 3, seed=0)
    assert sorted(splits) == ["test", "train", "val"]


@pytest.mark.parametrize(
    "rows,match",
    [
        (
            [{"path": "a.png", "label": "x"}, {"path": "./a.png", "label": "y"}],
            "same file as 'a.png' on line 2 with labels 'x' and 'y'",
        ),
        ([{"path": "missing.png", "label": "x"}], "do not exist"),
        ([{"path": "a.png", "label": ""}], "empty path or label"),
        ([{"path": "a.png", "label": "x", "split": "holdout"}], "'holdout' is not one of"),
    ],
)
def test_csv_refusals(tmp_path, rows, match):
    save(tmp_path / "a.png", rgb())
    columns = ["path", "label"] + (["split"] if "split" in rows[0] else [])
    with pytest.raises(DataError, match=match):
        load_index(write_csv(tmp_path / "m.csv", rows, columns))


def test_unknown_labels_and_missing_header(tmp_path):
    root = class_folders(tmp_path / "ds", {"a": 3, "b": 3, "c": 3})
    with pytest.raises(DataError, match=r"unknown labels \['c'\]"):
        load_index(root, classes=["a", "b"])
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\nx.png,a\n")
    with pytest.raises(DataError, match="'path' and 'label'"):
        load_index(bad)


def test_empty_class_and_missing_classes(tmp_path):
    root = class_folders(tmp_path / "ds", {"a": 3, "b": 3})
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="empty has no images"):
        load_index(root)
    split = split_folders(tmp_path / "sp", {"train": {"a": 2, "b": 2}, "val": {"a": 1}, "test": {"a": 1, "b": 1}})
    with pytest.raises(DataError, match="class 'b' has no images in val"):
        load_index(split)
    assert load_index(split, allow_missing_classes=True).counts()["val"] == [1, 0]
    no_train = split_folders(tmp_path / "nt", {"train": {"a": 2}, "val": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}})
    with pytest.raises(DataError, match="class 'b' has no training images"):
        load_index(no_train, allow_missing_classes=True)


def test_bad_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_index(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match=r"neither a \.csv manifest nor a \.zip"):
        load_index(tmp_path / "x.txt")
    (tmp_path / "flat").mkdir()
    save(tmp_path / "flat" / "a.png", rgb())
    with pytest.raises(DataError, match="no class folders"):
        load_index(tmp_path / "flat")


@pytest.mark.parametrize(
    "header,message",
    [("path,label,label", r"columns named twice: \['label'\]"), ("path,Label ,label", r"named twice"),
     ("path,label,", r"column\(s\) \[3\] have no name")],
)  # fmt: skip
def test_a_header_with_duplicate_or_empty_names_is_refused(tmp_path, header, message):
    save(tmp_path / "a.png", rgb(8, 8))
    (tmp_path / "labels.csv").write_text(f"{header}\na.png,neg,pos\n")
    with pytest.raises(DataError, match=message):
        load_index(tmp_path / "labels.csv")


def test_a_nul_byte_in_a_csv_is_refused_by_line(tmp_path):
    (tmp_path / "labels.csv").write_bytes(b"path,label\na.png,neg\nb\x00.png,pos\n")
    with pytest.raises(DataError, match="line 3 holds a NUL byte"):
        load_index(tmp_path / "labels.csv")

"""`fptplus audit` on synthetic data: planted shortcuts, copies and a leaked group are found; a clean set is clean."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fptplus.audit.duplicates import hamming_pairs
from fptplus.audit.features import phash
from fptplus.cli import main
from imagegen import make_dicom, save, write_csv

SPLITS = ["train"] * 14 + ["val"] * 3 + ["test"] * 3  # per class


def noise(seed: int, shift: int = 0, size: int = 48) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 200, (size, size, 3)).astype(np.int64) + shift
    return np.clip(img, 0, 255).astype(np.uint8)


def dataset(root, shift: int = 0):
    """20 images per class, explicit split, one group per image; class 'pos' brighter by `shift`."""
    rows = []
    for c, name in enumerate(("neg", "pos")):
        for i, split in enumerate(SPLITS):
            save(root / name / f"{i}.png", noise(100 * c + i, shift if c else 0))
            rows.append({"path": f"{name}/{i}.png", "label": name, "split": split, "group": f"{name}-{i}"})
    return rows


def audit(data, out, *extra):
    return main(["audit", "--data", str(data), "--out", str(out), "--min-per-split", "2", "--bootstrap", "50",
                 "--num-workers", "0", *extra])  # fmt: skip


def test_planted_shortcut_copy_and_leaked_group_are_found(tmp_path, capsys):
    rows = dataset(tmp_path / "d", shift=45)
    shutil.copy(tmp_path / "d" / "neg" / "0.png", tmp_path / "d" / "pos" / "copy.png")  # train neg -> test pos
    rows.append({"path": "pos/copy.png", "label": "pos", "split": "test", "group": "pos-copy"})
    near = np.asarray(Image.open(tmp_path / "d" / "neg" / "1.png")).copy()
    near[0, 0] ^= 1  # pixel-different, perceptually the same
    save(tmp_path / "d" / "neg" / "near.png", near)
    rows.append({"path": "neg/near.png", "label": "neg", "split": "val", "group": "neg-near"})
    rows[2]["group"] = rows[16]["group"] = "patient-7"  # one patient in train and in val
    csv_path = write_csv(tmp_path / "d" / "labels.csv", rows, ["path", "label", "split", "group"])
    assert audit(csv_path, tmp_path / "out") == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "audit.json").read_text())
    warnings = "\n".join(record["warnings"])
    assert "shortcut: intensity features alone separate the labels" in warnings
    intensity = next(f for f in record["baselines"]["classes"] if f["family"] == "intensity")
    assert intensity["auc"] > 0.9 and intensity["auc_ci"][0] > 0.75
    assert "byte-identical images across split and label and group: neg/0.png, pos/copy.png" in warnings
    kinds = {(g["kind"], tuple(sorted(x["path"] for x in g["images"]))) for g in record["duplicates"]}
    assert ("near-duplicate", ("neg/1.png", "neg/near.png")) in kinds
    assert record["leaked_groups"] == {"patient-7": ["train", "val"]}
    assert "1 group(s) in more than one split: patient-7 (train/val)" in warnings
    assert "audit of" in printed and "! shortcut" in printed
    for picture in ("class_means.png", "shortcut_classes_intensity.png"):
        assert (tmp_path / "out" / picture).stat().st_size > 1000
    md = (tmp_path / "out" / "audit.md").read_text()
    assert "## Verdict" in md and "patient-7" in md


def test_a_clean_dataset_gives_no_warning_and_the_cache_is_reused(tmp_path, capsys):
    rows = dataset(tmp_path / "d")
    csv_path = write_csv(tmp_path / "d" / "labels.csv", rows, ["path", "label", "split", "group"])
    assert audit(csv_path, tmp_path / "out") == 0
    record = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert record["warnings"] == [] and record["duplicates"] == []
    assert "nothing found" in capsys.readouterr().out
    save(tmp_path / "d" / "pos" / "3.png", noise(999))  # one file rewritten
    assert audit(csv_path, tmp_path / "out") == 0
    assert "reading 1 image(s) (39 from the cache)" in capsys.readouterr().out
    again = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert again["balance"] == record["balance"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(
        json.dumps({"test": {"auc": {"mean": 0.83, "std": 0.01, "values": [0.82, 0.84]}}})
    )
    assert audit(csv_path, tmp_path / "out", "--run", str(run)) == 0
    assert "the run's test AUC 83.0" in capsys.readouterr().out
    assert "Trained run" in (tmp_path / "out" / "audit.md").read_text()
    assert audit(csv_path, tmp_path / "out", "--run", str(tmp_path / "d")) == 2
    assert "no summary.json or results.json" in capsys.readouterr().err
    assert audit(csv_path, tmp_path / "d") == 2  # never into the dataset folder
    assert "is the dataset folder" in capsys.readouterr().err


def test_dicom_metadata_shortcut_and_undecodable_files(tmp_path):
    rows = []
    (tmp_path / "d").mkdir()
    for c, (name, maker) in enumerate((("neg", "ACME"), ("pos", "Globex"))):
        for i, split in enumerate(SPLITS):
            pixels = np.random.default_rng(10 * c + i).integers(0, 4096, (32, 32))
            make_dicom(tmp_path / "d" / f"{name}{i}.dcm", pixels, Manufacturer=maker)
            rows.append({"path": f"{name}{i}.dcm", "label": name, "split": split})
    (tmp_path / "d" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rows.append({"path": "broken.png", "label": "neg", "split": "train"})
    csv_path = write_csv(tmp_path / "d" / "labels.csv", rows, ["path", "label", "split"])
    assert audit(csv_path, tmp_path / "out") == 0
    record = json.loads((tmp_path / "out" / "audit.json").read_text())
    metadata = next(f for f in record["baselines"]["classes"] if f["family"] == "metadata")
    assert metadata["auc"] == pytest.approx(1.0)
    assert any("metadata features alone" in w for w in record["warnings"])
    assert len(record["undecodable"]) == 1 and "broken.png" in record["undecodable"][0]


def test_phash_and_hamming_pairs():
    img = Image.fromarray(noise(1, size=96))
    h = phash(img)
    assert h == phash(img.resize((120, 120)))  # scale-invariant enough: same hash
    other = phash(Image.fromarray(noise(2, size=96)))
    assert bin(h ^ other).count("1") > 10
    pairs = hamming_pairs([h, other, h ^ 0b111, None], max_distance=4)
    assert pairs == [(0, 2, 3)]
    imagehash = pytest.importorskip("imagehash")
    for seed in range(3):
        im = Image.fromarray(noise(seed, size=80))
        assert f"{phash(im):016x}" == str(imagehash.phash(im))  # the same algorithm as imagehash


def test_multilabel_data_is_audited_per_label(tmp_path):
    from imagegen import multilabel_csv

    data = multilabel_csv(tmp_path / "d", repeats=(3, 2, 2))
    assert audit(data, tmp_path / "out", "--label-columns", "A,B,C") == 0
    record = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert sorted(record["baselines"]) == ["A", "B", "C"] and record["data"]["multilabel"]
    layout = {
        task: next(f for f in fams if f["family"] == "layout")["auc"] for task, fams in record["baselines"].items()
    }
    assert min(layout.values()) > 0.9  # each label is a bright corner: the 8 x 8 layout sees it
    assert record["balance"]["test"] == {"A": 8, "B": 8, "C": 8}


def test_copies_become_groups_train_reads_and_train_warns_until_they_are_used(tmp_path, monkeypatch, capsys):
    """Class folders (automatic split) with near-duplicates: the audit writes grouped.csv; `train` on the folders
    warns that copies cross its split; `train --data grouped.csv` keeps each group in one split."""
    from fptplus.data.sources import load_index
    from runhelp import tiny_weights, train_args

    monkeypatch.setenv("FPTPLUS_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "d"
    for c, name in enumerate(("neg", "pos")):
        for i in range(20):
            save(data / name / f"{i}.png", noise(100 * c + i, 40 if c else 0))
    for i in range(8):  # eight near-duplicate copies of neg/i (one pixel different): the split scatters them
        near = noise(i)
        near[0, 0] ^= 1
        save(data / "neg" / f"copy{i}.png", near)
    assert audit(data, tmp_path / "out") == 0
    printed = capsys.readouterr().out
    grouped = tmp_path / "out" / "grouped.csv"
    assert grouped.exists() and "grouped.csv" in printed and len(printed.splitlines()) < 40
    weights = tiny_weights(tmp_path)
    assert main(train_args(data, tmp_path / "run", weights, "--epochs", "1")) == 0
    assert "found" in capsys.readouterr().out and "copies that this split puts in two splits" in (
        tmp_path / "run" / "log.txt").read_text()  # fmt: skip
    index = load_index(grouped)
    by_group = {}
    for s in index.samples:
        if s.group:
            by_group.setdefault(s.group, set()).add(s.split)
    assert by_group and all(len(v) == 1 for v in by_group.values())  # each copy group in one split
    assert main(train_args(grouped, tmp_path / "run2", weights, "--epochs", "1")) == 0
    assert "copies that this split puts in two splits" not in (tmp_path / "run2" / "log.txt").read_text()


def test_an_id_that_follows_the_label_is_a_names_shortcut(tmp_path):
    """Positive patients all have ids above 1200 (acquisition order): the names family finds it; the class folder
    itself never counts (it is the label)."""
    rows = []
    for c, name in enumerate(("neg", "pos")):
        for i, split in enumerate(SPLITS):
            pid = (100 + 7 * i) if c == 0 else (1200 + 7 * i)
            save(tmp_path / "d" / "images" / f"patient{pid}.png", noise(100 * c + i))
            rows.append({"path": f"images/patient{pid}.png", "label": name, "split": split, "group": f"P{pid}"})
    csv_path = write_csv(tmp_path / "d" / "labels.csv", rows, ["path", "label", "split", "group"])
    assert audit(csv_path, tmp_path / "out") == 0
    record = json.loads((tmp_path / "out" / "audit.json").read_text())
    names = next(f for f in record["baselines"]["classes"] if f["family"] == "names")
    assert names["auc"] > 0.9
    assert any(w.startswith("shortcut: names features alone") for w in record["warnings"])
    folders = tmp_path / "folders"  # class folders with numbering restarted per class: nothing to find
    for c, name in enumerate(("neg", "pos")):
        for i in range(20):
            save(folders / name / f"{i}.png", noise(100 * c + i))
    assert audit(folders, tmp_path / "out2") == 0
    record = json.loads((tmp_path / "out2" / "audit.json").read_text())
    names = next(f for f in record["baselines"]["classes"] if f["family"] == "names")
    assert names["auc"] is None or names["auc"] < 0.75


def fundus_like(seed: int, size: int = 320) -> np.ndarray:
    """The same disc on black for every seed (orange, lit from one side, a bright optic disc); only faint,
    seed-dependent 5 px detail differs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    disc = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 <= 0.45**2
    shade = 0.6 + 0.5 * xx + 0.2 * yy + 0.8 * np.exp(-((yy - 0.45) ** 2 + (xx - 0.3) ** 2) / 0.004)
    detail = rng.normal(0, 1, (size // 5, size // 5)).repeat(5, 0).repeat(5, 1)
    img = np.where(disc[..., None], np.array([190, 90, 40]) * shade[..., None] + 12 * detail[..., None], 0)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_a_shared_layout_is_not_a_near_duplicate_but_a_re_encoded_copy_is(tmp_path):
    """Fundus-like images (one layout, different detail) pass the hash and thumbnail tests pairwise — IDRiD's
    312 false alarms — and only the detail test tells them apart; a half-size JPEG copy is still found."""
    import io

    from fptplus.audit.duplicates import detail_threshold, detail_vectors, thumb_correlation
    from fptplus.audit.features import THUMB

    rows = []
    for c, name in enumerate(("neg", "pos")):
        for i, split in enumerate(SPLITS):
            save(tmp_path / "d" / name / f"{i}.png", fundus_like(100 * c + i))
            rows.append({"path": f"{name}/{i}.png", "label": name, "split": split, "group": f"{name}-{i}"})
    buf = io.BytesIO()
    Image.fromarray(fundus_like(3)).resize((160, 160)).save(buf, "JPEG", quality=85)
    (tmp_path / "d" / "neg" / "copy.jpg").write_bytes(buf.getvalue())
    rows.append({"path": "neg/copy.jpg", "label": "neg", "split": "test", "group": "neg-copy"})
    csv_path = write_csv(tmp_path / "d" / "labels.csv", rows, ["path", "label", "split", "group"])
    assert audit(csv_path, tmp_path / "out") == 0
    record = json.loads((tmp_path / "out" / "audit.json").read_text())
    near = [sorted(x["path"] for x in g["images"]) for g in record["duplicates"] if g["kind"] == "near-duplicate"]
    assert near == [["neg/3.png", "neg/copy.jpg"]]
    # the first two tests alone would have flagged unrelated pairs
    thumbs = np.stack([np.asarray(Image.fromarray(fundus_like(s)).resize((THUMB, THUMB), Image.Resampling.BILINEAR))
                       for s in (0, 1, 2, 101)])  # fmt: skip
    hashes = [phash(Image.fromarray(fundus_like(s))) for s in (0, 1, 2, 101)]
    assert any(thumb_correlation(thumbs, a, b) >= 0.97 for a, b, _ in hamming_pairs(hashes, 4))
    v = detail_vectors(thumbs)
    assert float(v[0] @ v[1]) < detail_threshold(v, set()) <= 0.98
    assert 0.5 < record["detail_threshold"] <= 0.98 and "detail (thumbnail minus its blur)" in (
        (tmp_path / "out" / "audit.md").read_text()
    )

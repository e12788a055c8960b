"""Dataset checks before any compute: symlink loops, one file under two paths, non-UTF-8 names, byte-identical
files across labels/splits, segmentation masks next to their images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fptplus.cli import main
from fptplus.data.sources import DataError, load_index
from imagegen import class_folders, rgb, save, write_csv


@pytest.fixture
def root(tmp_path):
    return class_folders(tmp_path / "data", {"neg": 5, "pos": 5})


def test_symlink_loop_is_refused_naming_the_link(root):
    (root / "neg" / "loop").symlink_to("..")  # neg/loop/pos/... would relabel every pos image as neg
    with pytest.raises(DataError, match=r"folder neg/loop is the same folder as \. \(a symlink loop"):
        load_index(root)


def test_a_folder_linked_into_another_class_is_refused(root):
    (root / "pos" / "more").symlink_to(root / "neg")
    with pytest.raises(DataError, match=r"pos/more is the same folder as neg"):
        load_index(root)


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_one_file_under_two_paths_is_refused_with_both(root, link):
    target = root / "neg" / "img0.png"
    extra = root / "pos" / "copy.png"
    extra.symlink_to(target) if link == "symlink" else os.link(target, extra)
    with pytest.raises(DataError, match=r"reached by two paths.*neg/img0\.png \(neg, \w+\) and pos/copy\.png \(pos"):
        load_index(root)


def test_csv_same_image_relative_and_absolute_with_two_labels(root, monkeypatch):
    rows = [{"path": f"{c}/img{i}.png", "label": c} for c in ("neg", "pos") for i in range(5)]
    rows.append({"path": str((root / "neg" / "img0.png").resolve()), "label": "pos"})
    write_csv(root / "labels.csv", rows, ["path", "label"])
    monkeypatch.chdir(root)  # `--data labels.csv` from the dataset folder: relative paths resolve against "."
    with pytest.raises(DataError, match=r"line 12: .*img0\.png' is the same file as 'neg/img0\.png' on line 2 with "
                                        r"labels 'neg' and 'pos'"):  # fmt: skip
        load_index("labels.csv")


def test_non_utf8_file_names_are_refused_up_front(root, tmp_path, capsys):
    bad = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name on a UTF-8 system
    shutil.copy(root / "neg" / "img0.png", root / "neg" / bad)
    (root / "neg" / "img0.png").unlink()
    with pytest.raises(DataError, match=r"not valid UTF-8 \(1\), e\.g\. neg/caf\\xe9\.png: .*convmv"):
        load_index(root)
    store = tmp_path / "store"
    rc = main(
        [
            "preload",
            "--data",
            str(root),
            "--out",
            str(store),
            "--img-size",
            "64",
            "--side-img-size",
            "32",
            "--weights",
            "none",
        ]
    )
    assert rc == 2 and "caf\\xe9.png" in capsys.readouterr().err
    assert not store.exists()  # refused before the LPM pass, not after it


def test_predict_refuses_non_utf8_names_before_building_the_model(tmp_path):
    from fptplus.errors import ConfigError
    from fptplus.trainer.evaluate import collect_images

    folder = tmp_path / "new"
    save(folder / os.fsdecode(b"r\xf6ntgen.png"), rgb())
    with pytest.raises(ConfigError, match=r"not valid UTF-8 \(1\), e\.g\. \S*/r\\xf6ntgen\.png: "):
        collect_images([folder])


def test_byte_identical_files_with_two_labels_are_refused_unless_allowed(root):
    shutil.copy(root / "neg" / "img1.png", root / "pos" / "dup.png")
    pattern = r"with different labels \(1 groups\): neg/img1\.png \(neg, \w+\) = pos/dup\.png \(pos, \w+\).*--allow-dup"
    with pytest.raises(DataError, match=pattern):
        load_index(root)
    index = load_index(root, allow_duplicates=True)
    assert len(index.samples) == 11
    assert any("byte-identical" in w and "with different labels (allowed)" in w for w in index.warnings)


def test_byte_identical_files_in_one_class_are_reported_with_their_splits(tmp_path):
    root = class_folders(tmp_path / "data", {"neg": 12, "pos": 12})
    for i in range(6):  # enough copies that some land in another split than their original
        shutil.copy(root / "neg" / f"img{i}.png", root / "neg" / f"again{i}.png")
    index = load_index(root)
    (warning,) = index.warnings
    assert warning.startswith("byte-identical image files (6 groups, ") and "across splits" in warning
    assert "again0.png (neg, " in warning


def test_a_different_file_of_equal_size_is_not_a_duplicate(root):
    save(root / "pos" / "other.png", rgb(seed=77))  # same size as the others (random PNGs of one shape)
    assert load_index(root).warnings == []


def test_segmentation_masks_are_left_out_unless_asked_for(root, capsys):
    for i in range(3):
        save(root / "neg" / f"img{i}_mask.png", rgb(seed=50 + i))
    save(root / "pos" / "img0_mask_1.png", rgb(seed=60))
    save(root / "pos" / "lonely_mask.png", rgb(seed=61))  # no lonely.png next to it: a real image
    index = load_index(root)
    assert sorted(index.masks) == ["neg/img0_mask.png", "neg/img1_mask.png", "neg/img2_mask.png",
                                   "pos/img0_mask_1.png"]  # fmt: skip
    assert "pos/lonely_mask.png" in {s.path for s in index.samples} and len(index.samples) == 11
    assert any("likely segmentation masks (4)" in w and "--include-masks" in w for w in index.warnings)
    assert len(load_index(root, include_masks=True).samples) == 15
    rows = [{"path": "neg/img0.png", "label": "neg"}, {"path": "neg/img0_mask.png", "label": "neg"}]
    rows += [{"path": f"{c}/img{i}.png", "label": c} for c in ("neg", "pos") for i in range(1, 5)]
    from_csv = load_index(write_csv(root / "labels.csv", rows, ["path", "label"]))
    assert from_csv.masks == ["neg/img0_mask.png"] and len(from_csv.samples) == 9


def test_latin1_csv_is_a_clear_error(root):
    rows = [{"path": f"{c}/img{i}.png", "label": c + "é"} for c in ("neg", "pos") for i in range(5)]
    path = write_csv(root / "labels.csv", rows, ["path", "label"], encoding="latin-1")
    with pytest.raises(DataError, match=r"labels\.csv is not UTF-8 text \(byte 0xe9 on line 2.*iconv"):
        load_index(path)


def test_malformed_csv_is_a_clear_error(root):
    path = root / "labels.csv"
    path.write_text('path,label\nneg/img0.png,"neg\n')  # unterminated quote
    with pytest.raises(DataError):
        load_index(path)


def test_preload_cli_prints_the_warnings(root, tmp_path, capsys):
    from conftest import TINY

    shutil.copy(root / "neg" / "img1.png", root / "neg" / "dup.png")
    store = tmp_path / "store"
    tiny = ["--weights", "none", "--backbone-kwargs", repr(TINY), "--side-depth", "2", "--workers", "0"]
    rc = main(["preload", "--data", str(root), "--out", str(store), "--img-size", "64", "--side-img-size", "32", *tiny])
    out = capsys.readouterr()
    assert rc == 0 and "warning: byte-identical image files (1 groups" in out.out


def test_scan_paths_are_unchanged_for_plain_folders(root):
    index = load_index(root)
    assert sorted(Path(s.path).name for s in index.samples) == sorted([f"img{i}.png" for i in range(5)] * 2)
    assert index.warnings == [] and index.masks == []

"""The reader seam: a dataset inside a .zip is indexed, checked, preloaded and trained exactly as its folder."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest

from fptplus.cli import main
from fptplus.data.readers import FolderReader, ZipReader
from fptplus.data.sources import DataError, load_index
from fptplus.store import FeatureStore, StoreError
from imagegen import class_folders, rgb, save
from storetools import build, tiny_weights

from conftest import TINY


def zip_of(folder, archive, top=None):
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                name = p.relative_to(folder).as_posix()
                zf.write(p, f"{top}/{name}" if top else name)
    return archive


@pytest.mark.parametrize("top", [None, "my_data"])
def test_a_zip_indexes_like_its_folder(tmp_path, top):
    root = class_folders(tmp_path / "data", {"neg": 5, "pos": 5})
    folder = load_index(root, seed=3)
    archive = load_index(zip_of(root, tmp_path / "data.zip", top), seed=3)
    assert isinstance(archive.reader, ZipReader) and isinstance(folder.reader, FolderReader)
    strip = (lambda p: p.split("/", 1)[1]) if top else (lambda p: p)
    assert [(strip(s.path), s.label, s.split) for s in archive.samples] == [
        (s.path, s.label, s.split) for s in folder.samples
    ]
    for i in (0, 7):
        a, b = archive.load(i), folder.load(i)
        assert a.sha256 == b.sha256 and np.array_equal(a.image.numpy(), b.image.numpy())
    assert archive.reader.locate(archive.samples[0].path).endswith(f"data.zip::{archive.samples[0].path}")


def test_zip_checks_and_masks(tmp_path):
    root = class_folders(tmp_path / "data", {"neg": 5, "pos": 5})
    save(root / "neg" / "img0_mask.png", rgb(seed=90))
    index = load_index(zip_of(root, tmp_path / "a.zip"))
    assert index.masks == ["neg/img0_mask.png"] and len(index.samples) == 10
    shutil.copy(root / "neg" / "img1.png", root / "pos" / "dup.png")
    with pytest.raises(DataError, match=r"byte-identical image files with different labels"):
        load_index(zip_of(root, tmp_path / "b.zip"))
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match=r"cannot read .*bad\.zip as a zip archive"):
        load_index(tmp_path / "bad.zip")


def test_preload_from_a_zip_equals_the_folder_and_notices_a_changed_member(tmp_path):
    root = class_folders(tmp_path / "data", {"neg": 4, "pos": 4})
    folder, archive = load_index(root, seed=0), load_index(zip_of(root, tmp_path / "d.zip"), seed=0)
    build(folder, tmp_path / "s1")
    build(archive, tmp_path / "s2")
    a, b = FeatureStore(tmp_path / "s1"), FeatureStore(tmp_path / "s2")
    assert [r["sha256"] for r in a.samples] == [r["sha256"] for r in b.samples]
    for i in range(len(a)):
        assert np.array_equal(a[i]["keys"], b[i]["keys"]) and np.array_equal(a[i]["side"], b[i]["side"])
    save(root / "pos" / "img1.png", rgb(seed=123))  # the archive is rebuilt with one member's pixels changed
    zip_of(root, tmp_path / "d.zip")
    with pytest.raises(StoreError, match="changed since preloading"):
        build(load_index(tmp_path / "d.zip", seed=0), tmp_path / "s2")


def test_train_reads_a_zip(tmp_path):
    root = class_folders(tmp_path / "data", {"neg": 8, "pos": 8}, size=(48, 48))
    archive = zip_of(root, tmp_path / "data.zip")
    args = ["train", "--data", str(archive), "--out", str(tmp_path / "run"), "--weights", str(tiny_weights()),
            "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--bootstrap", "0", "--img-size", "64",
            "--backbone-kwargs", repr(TINY), "--side-depth", "2", "--reduction", "2", "--num-prompts", "4"]  # fmt: skip
    assert main(args) == 0
    splits = (tmp_path / "run" / "splits.csv").read_text().splitlines()
    assert splits[1].startswith(f"{archive.resolve().as_posix()}::")
    assert main(["evaluate", str(tmp_path / "run")]) == 0

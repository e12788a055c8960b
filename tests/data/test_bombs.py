"""What is inflated is bounded, not only the pixel count a header announces: a deflated DICOM that inflates to far
more than an image, a zip member of gigabytes, a huge file that is no image — refused before they fill memory."""

from __future__ import annotations

import resource
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from fptplus.data.decode import DecodeError, byte_budget, decode_bytes, load_image_file
from fptplus.data.sources import load_index
from imagegen import class_folders, make_dicom, rgb, save

BUDGET_PIXELS = 1_000_000  # budget 8 MB + 1 MiB of headers


def deflated_dicom(path, payload_mb):
    src = make_dicom(path, np.random.default_rng(0).integers(0, 4096, (32, 32)))
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    if payload_mb:
        ds.add_new((0x0009, 0x0010), "LO", "BOMB")
        ds.add_new((0x0009, 0x1000), "OB", bytes(payload_mb * 2**20))  # zeros: deflate to almost nothing
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_deflated_dicom_is_inflated_within_the_budget_only(tmp_path):
    fine = deflated_dicom(tmp_path / "fine.dcm", 0)
    assert load_image_file(fine, BUDGET_PIXELS).image.shape == (3, 32, 32)
    bomb = deflated_dicom(tmp_path / "bomb.dcm", 64)
    assert bomb.stat().st_size < 2**20  # 64 MiB inside
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DecodeError, match="the deflated DICOM dataset holds more than 9 MiB"):
        load_image_file(bomb, BUDGET_PIXELS)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 40 * 1024  # KiB: never inflated whole
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_bytes(bomb.read_bytes(), ".dcm", "upload", BUDGET_PIXELS)  # the app's and predict's path


def test_a_huge_zip_member_is_refused_before_it_is_read(tmp_path):
    class_folders(tmp_path / "d", {"neg": 3, "pos": 3})
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted((tmp_path / "d").rglob("*.png")):
            zf.write(p, p.relative_to(tmp_path / "d").as_posix())
        zf.writestr("pos/huge.png", bytes(20 * 2**20))  # 20 MiB of zeros in a few KiB
    index = load_index(archive, max_pixels=BUDGET_PIXELS, allow_missing_classes=True)
    i = next(j for j, s in enumerate(index.samples) if s.path.endswith("huge.png"))
    with pytest.raises(DecodeError, match=r"huge\.png: the zip member \(inflated\) holds 20 MiB"):
        index.load(i)


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "scan.png"
    save(big, rgb(8, 8))
    with open(big, "r+b") as f:
        f.truncate(byte_budget(BUDGET_PIXELS) + 1)  # sparse: no disk used
    with pytest.raises(DecodeError, match="the file holds more than 9 MiB"):
        load_image_file(big, BUDGET_PIXELS)

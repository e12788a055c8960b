"""Decoding every supported format to (3, H, W) uint8 / float [0, 1], and naming bad files."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from fptplus.data.decode import DecodeError, decode_bytes, load_image_file
from imagegen import make_dicom, rgb, save

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_lossless_rgb_formats_exact(tmp_path, fmt):
    arr = rgb(30, 20)
    out = load_image_file(save(tmp_path / f"x.{fmt.lower()}", arr, format=fmt))
    assert out.image.dtype == torch.uint8 and out.image.shape == (3, 30, 20)
    assert torch.equal(out.image, torch.from_numpy(arr).permute(2, 0, 1))
    assert out.nbytes == (tmp_path / f"x.{fmt.lower()}").stat().st_size and len(out.sha256) == 64


def test_jpeg(tmp_path):
    arr = np.full((16, 24, 3), (200, 100, 50), np.uint8)
    img = load_image_file(save(tmp_path / "x.jpg", arr, quality=95)).image
    assert img.shape == (3, 16, 24) and (img.int() - torch.tensor([200, 100, 50])[:, None, None]).abs().max() <= 3


def test_grayscale_rgba_palette(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    g = load_image_file(save(tmp_path / "g.png", gray)).image
    assert g.shape == (3, 8, 8) and torch.equal(g[0], g[2]) and torch.equal(g[1], torch.from_numpy(gray))
    rgba = np.dstack([rgb(8, 8), np.full((8, 8), 7, np.uint8)])
    a = load_image_file(save(tmp_path / "a.png", rgba)).image
    assert torch.equal(a, torch.from_numpy(rgba[..., :3]).permute(2, 0, 1))  # alpha dropped
    pal = Image.fromarray(rgb(8, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    p = load_image_file(tmp_path / "p.png").image
    assert torch.equal(p, torch.from_numpy(np.array(pal.convert("RGB"))).permute(2, 0, 1))


def test_16bit_png_keeps_its_precision(tmp_path):
    arr = np.array([[0, 1, 257, 65535]], dtype=np.uint16)
    img = load_image_file(save(tmp_path / "x16.png", arr)).image
    assert img.dtype == torch.float32 and img.shape == (3, 1, 4)
    torch.testing.assert_close(img[0, 0], torch.tensor([0, 1, 257, 65535]) / 65535.0)


def test_exif_orientation_applied(tmp_path):
    arr = rgb(10, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif, quality=95)
    assert load_image_file(tmp_path / "r.jpg").image.shape == (3, 30, 10)


def test_dicom_ct_rescale(tmp_path):
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    img = load_image_file(PYDICOM_FILES / "CT_small.dcm").image
    assert img.dtype == torch.float32 and img.shape == (3, 128, 128)
    expected = (hu - hu.min()) / (hu.max() - hu.min())  # no window in the file: min–max of the HU image
    torch.testing.assert_close(img[0].double(), torch.from_numpy(expected), atol=1e-6, rtol=0)


def test_dicom_mr_window(tmp_path):
    ds = pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm")
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    x = ds.pixel_array.astype(np.float64)
    expected = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    img = load_image_file(PYDICOM_FILES / "MR_small.dcm").image
    torch.testing.assert_close(img[1].double(), torch.from_numpy(expected), atol=1e-6, rtol=0)


def test_dicom_monochrome1_inverted_with_rescale_and_window(tmp_path):
    pixels = np.array([[0, 1000], [2000, 4000]])
    common = dict(RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=1000, WindowWidth=2001)
    m2 = load_image_file(make_dicom(tmp_path / "m2.dcm", pixels, **common)).image[0]
    m1 = load_image_file(make_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1", **common)).image[0]
    values = pixels * 2.0 - 1000  # modality LUT: -1000, 1000, 3000, 7000
    expected = np.clip((values - 999.5) / 2000 + 0.5, 0, 1)  # [0, 0.50025, 1, 1]
    torch.testing.assert_close(m2.double(), torch.from_numpy(expected), atol=1e-6, rtol=0)
    torch.testing.assert_close(m1, 1 - m2)


def test_corrupt_and_non_image_files_are_named(tmp_path):
    good = io.BytesIO()
    Image.fromarray(rgb(64, 64)).save(good, format="JPEG")
    (tmp_path / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (tmp_path / "notes.png").write_text("this is not an image")
    (tmp_path / "empty.bmp").write_bytes(b"")
    for name, match in [("truncated.jpg", "truncated.jpg"), ("notes.png", "notes.png: not an image file"),
                        ("empty.bmp", "empty.bmp: empty file"), ("absent.png", "absent.png: cannot read")]:  # fmt: skip
        with pytest.raises(DecodeError, match=match):
            load_image_file(tmp_path / name)


def test_decode_bytes_detects_dicom_without_extension(tmp_path):
    path = make_dicom(tmp_path / "scan", np.array([[0, 4095]]))
    assert decode_bytes(path.read_bytes(), "", "scan").shape == (3, 1, 2)


def bomb_png(path: Path, side: int = 20_000) -> Path:
    """A valid 1-bit PNG of side×side white pixels: a few KB on disk, side² bytes once Pillow decodes it."""
    row = b"\0" + b"\xff" * (side // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 100_000  # 400 megapixels in a tiny file
    t0 = time.perf_counter()
    with pytest.raises(DecodeError, match=r"bomb\.png: 20000x20000 = 400 megapixels exceeds the pixel budget of 100"):
        load_image_file(bomb)
    assert time.perf_counter() - t0 < 1.0  # refused from the header, nothing decoded
    small = bomb_png(tmp_path / "small.png", side=64)
    assert load_image_file(small).image.shape == (3, 64, 64)
    with pytest.raises(DecodeError, match=r"64x64 = 4,096 pixels exceeds the pixel budget of 1,000 pixels"):
        load_image_file(small, max_pixels=1000)  # the budget is configurable (--max-image-pixels)
    assert load_image_file(bomb_png(tmp_path / "ok.png", side=2000), max_pixels=None).image.shape[1:] == (2000, 2000)


def test_dicom_budget_is_read_from_rows_and_columns(tmp_path):
    path = make_dicom(tmp_path / "big.dcm", np.zeros((40, 50)))
    with pytest.raises(DecodeError, match=r"big\.dcm: 50x40 = 2,000 pixels exceeds the pixel budget of 1,999"):
        load_image_file(path, max_pixels=1999)
    assert load_image_file(path, max_pixels=2000).image.shape == (3, 40, 50)


def test_the_index_carries_the_budget_to_every_decoder(tmp_path):
    from fptplus.config import DataConfig
    from fptplus.data.scan import scan_images
    from imagegen import class_folders

    root = class_folders(tmp_path / "data", {"neg": 3, "pos": 3})
    bomb_png(root / "pos" / "huge.png", side=2000)
    index = DataConfig(data=str(root), max_image_pixels=1_000_000).load_index()
    bad = scan_images(index, workers=0)
    (reason,) = bad.values()
    assert reason.startswith(f"{root}/pos/huge.png: 2000x2000 = 4 megapixels exceeds the pixel budget of 1 megapixels")
    assert scan_images(DataConfig(data=str(root), max_image_pixels=0).load_index(), workers=0) == {}

"""Decoding medical images (JPEG, PNG 8/16 bit, TIFF, BMP, DICOM) to one RGB tensor format.

Every decoder returns a (3, H, W) tensor: uint8 for 8-bit sources, float32 in [0, 1] for anything with more
bits (16-bit PNG/TIFF, DICOM). `torchvision.transforms.v2.ToDtype(float32, scale=True)` maps both to [0, 1].

DICOM: modality LUT (rescale slope/intercept), then the VOI transform (VOI LUT sequence, or the first
window centre/width with the LINEAR, LINEAR_EXACT or SIGMOID function; min–max over the image when the file
has none), then MONOCHROME1 inversion. Multi-frame files use their first frame (only that frame is decoded).

Pixel budget: an image whose header announces more than `max_pixels` pixels (default DEFAULT_MAX_PIXELS, 100
megapixels: beyond every camera, scanner and mammography detector in clinical use; `--max-image-pixels` changes
it) is refused from its header, before any pixel is decoded — a 400 KB "decompression bomb" PNG of 20000×20000
would otherwise take gigabytes in every decoding worker.
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import FPTPlusError
from ..files import display
from .limits import DEFAULT_MAX_PIXELS

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"})
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
Image.MAX_IMAGE_PIXELS = None  # fptplus applies its own budget (`max_pixels`), from the header, for every format


class DecodeError(FPTPlusError):
    """One or more image files could not be decoded."""


def undecodable_error(reasons: list[str], total: int, listed_in: str = "skipped.csv") -> DecodeError:
    """One error that lists every file that failed to decode, and the two ways forward."""
    listing = "\n".join(f"  {r}" for r in reasons)
    return DecodeError(
        f"{len(reasons)} of {total} images could not be decoded:\n{listing}\n"
        f"Fix or remove them, or pass --skip-bad to leave them out (they are listed in {listed_in})."
    )


@dataclass(frozen=True)
class DecodedImage:
    """image: (3, H, W) uint8 or float32 in [0, 1]; sha256, nbytes and modification time of the file as read."""

    image: torch.Tensor
    sha256: str
    nbytes: int
    mtime_ns: int = 0
    ctime_ns: int | None = None
    inode: int | None = None


def is_dicom(data: bytes, suffix: str) -> bool:
    return suffix.lower() in DICOM_EXTENSIONS or data[128:132] == b"DICM"


def load_image_file(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Reads a file once, hashes its bytes and decodes them. Raises DecodeError naming the file.

    Args:
        path: the image file.
        max_pixels: refuse images whose header announces more pixels (None or 0: no limit).
    """
    path = Path(path)
    name = display(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            try:
                check_bytes(st.st_size, max_pixels)
            except DecodeError as err:
                raise DecodeError(f"{name}: {err}") from None
            mtime_ns = st.st_mtime_ns
            data = f.read()
    except OSError as err:
        raise DecodeError(f"{name}: cannot read ({err.strerror or err})") from err
    image = decode_bytes(data, path.suffix, name, max_pixels)
    return DecodedImage(image, hashlib.sha256(data).hexdigest(), len(data), mtime_ns)


def _pixels(n: int) -> str:
    return f"{n / 1e6:.3g} megapixels" if n >= 1e6 else f"{n:,} pixels"


BYTES_PER_PIXEL = 8  # 4 channels of 16 bits: the most an uncompressed image within the budget needs per pixel
HEADER_BYTES = 2**20  # headers, metadata, ICC profiles


def byte_budget(max_pixels: int | None) -> int | None:
    """The most bytes an image file (or a DICOM's inflated dataset) within the pixel budget can need."""
    return max_pixels * BYTES_PER_PIXEL + HEADER_BYTES if max_pixels else None


def check_bytes(size: int, max_pixels: int | None, what: str = "the file") -> None:
    """Refuses more bytes than any image within the pixel budget can hold (a zip member or a deflated DICOM that
    inflates to gigabytes, a huge non-image file), before they are read or inflated."""
    budget = byte_budget(max_pixels)
    if budget is not None and size > budget:
        raise DecodeError(
            f"{what} holds more than {budget / 2**20:,.0f} MiB, more than any image within the pixel budget of "
            f"{_pixels(max_pixels)} needs (a decompression bomb, or not an image); raise --max-image-pixels if it is "
            "genuine"
        )


def check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    """Refuses an image larger than the pixel budget (called with the header's size, before decoding)."""
    if max_pixels and width * height > max_pixels:
        raise DecodeError(
            f"{width}x{height} = {_pixels(width * height)} exceeds the pixel budget of {_pixels(max_pixels)} (a "
            "decompression bomb, or an image far larger than the models read); raise --max-image-pixels if it is "
            "genuine"
        )


def decode_bytes(data: bytes, suffix: str, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decodes an encoded image to (3, H, W) uint8 or float32 [0, 1]."""
    if not data:
        raise DecodeError(f"{name}: empty file")
    try:
        array = _decode_dicom(data, max_pixels) if is_dicom(data, suffix) else _decode_pil(data, max_pixels)
    except DecodeError as err:
        raise DecodeError(f"{name}: {err}") from err
    except Exception as err:  # decoders raise many types for corrupt data
        raise DecodeError(f"{name}: not a readable image ({type(err).__name__}: {err})") from err
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise DecodeError(f"{name}: unexpected decoded shape {array.shape}")
    if array.dtype != np.uint8:
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise DecodeError(f"{name}: image contains NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))  # (3, H, W)


def _decode_pil(data: bytes, max_pixels: int | None) -> np.ndarray:
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
        check_pixels(*img.size, max_pixels)
        img.load()  # decode now: truncated or corrupt data fails here, not later
    except UnidentifiedImageError as err:
        raise DecodeError("not an image file (format not recognised)") from err
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _scale_high_bit(np.asarray(img))
    if img.mode in ("LA", "La"):
        img = img.convert("L")
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")  # palette, RGBA (alpha dropped), CMYK, YCbCr, 1-bit
    return np.asarray(img, dtype=np.uint8)


def _scale_high_bit(array: np.ndarray) -> np.ndarray:
    """16-bit integers -> [0, 1] by the type's range; 32-bit ints/floats -> min–max."""
    if array.dtype == np.uint16 or (array.dtype.kind in "iu" and array.min() >= 0 and array.max() <= 65535):
        return array.astype(np.float32) / 65535.0
    return _minmax(array.astype(np.float32))


def _minmax(array: np.ndarray) -> np.ndarray:
    lo, hi = float(array.min()), float(array.max())
    return np.zeros_like(array, dtype=np.float32) if hi <= lo else ((array - lo) / (hi - lo)).astype(np.float32)


DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole dataset is zlib-compressed


def _check_deflated(data: bytes, max_pixels: int | None) -> None:
    """Inflates a deflated DICOM's dataset in 1 MiB steps, discarding the output, and refuses it once it passes the
    byte budget (pydicom would inflate all of it into memory first)."""
    budget = byte_budget(max_pixels)
    if budget is None or data[128:132] != b"DICM" or DEFLATED.encode() not in data[132:4096]:
        return
    if data[132:136] != b"\x02\x00\x00\x00" or data[136:138] != b"UL":  # (0002,0000) group length, explicit VR
        return
    start = 144 + int.from_bytes(data[140:144], "little")  # the dataset follows the file meta group
    inflate, rest, total = zlib.decompressobj(-zlib.MAX_WBITS), data[start:], 0
    try:
        while rest:
            total += len(inflate.decompress(rest, 2**20))
            if total > budget:
                check_bytes(total, max_pixels, "the deflated DICOM dataset")
            rest = inflate.unconsumed_tail
    except zlib.error as err:
        raise DecodeError(f"the deflated DICOM dataset is damaged ({err})") from None


def _decode_dicom(data: bytes, max_pixels: int | None) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    _check_deflated(data, max_pixels)
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except pydicom.errors.InvalidDicomError:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    if "PixelData" not in ds:
        raise DecodeError("DICOM file has no pixel data")
    check_pixels(int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0), max_pixels)
    try:
        pixels = pixel_array(ds, index=0) if int(ds.get("NumberOfFrames", 1) or 1) > 1 else ds.pixel_array
    except Exception as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise DecodeError(
            f"cannot decode DICOM pixel data (transfer syntax {name}): {err}. Compressed DICOM may need "
            "extra decoders: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
        ) from err
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if not photometric.startswith("MONOCHROME"):  # colour: pydicom already returns RGB
        if pixels.dtype == np.uint8:
            return pixels
        return pixels.astype(np.float32) / float(2 ** int(ds.get("BitsStored", 16)) - 1)
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    if "VOILUTSequence" in ds:
        lut_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        out = np.asarray(apply_voi_lut(np.rint(values).astype(np.int64), ds, prefer_lut=True), np.float64)
        out = np.clip(out / float(2**lut_bits - 1), 0.0, 1.0)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        out = _window(values, _first(ds.WindowCenter), _first(ds.WindowWidth), ds.get("VOILUTFunction", "LINEAR"))
    else:
        out = _minmax(values)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)


def _first(value) -> float:
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 VOI windowing, output scaled to [0, 1]."""
    function = str(function).upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    width = max(width, 1.0)
    if width == 1.0:
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)

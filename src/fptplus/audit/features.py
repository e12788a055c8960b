"""Per-image facts the audit works from, computed once and cached: header facts (size, format, bit depth, EXIF or
DICOM acquisition tags), a 64 × 64 thumbnail, a perceptual hash and hashes of the bytes and of the decoded pixels.

The cache (`OUT/cache/images.json` + `thumbs.npy`) is keyed by path, file size and modification time: a rerun reads
only new or changed files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..data.decode import DecodeError, decode_bytes, is_dicom
from ..data.index import DataIndex
from ..files import write_json_atomic

THUMB = 64  # thumbnail side (px)
CACHE_VERSION = 1
DICOM_TAGS = ("Manufacturer", "ManufacturerModelName", "InstitutionName", "PhotometricInterpretation", "Modality",
              "BitsStored")  # fmt: skip
EXIF_TAGS = {271: "Make", 272: "Model", 305: "Software"}


@dataclass
class ImageFacts:
    """What the audit knows of one image (`error` set when it does not decode; then only the header facts)."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int = 0
    height: int = 0
    format: str = ""
    mode: str = ""
    bits: int = 8
    meta: dict[str, str] = field(default_factory=dict)
    pixel_sha256: str = ""
    phash: str = ""  # 64-bit perceptual hash, hex
    error: str = ""


def phash(gray: Image.Image) -> int:
    """The 64-bit DCT perceptual hash of imagehash.phash: 32 × 32 Lanczos grey, 2-D DCT-II, the 8 × 8 lowest
    frequencies against their median (bit set: above)."""
    from scipy.fft import dct

    pixels = np.asarray(gray.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    coeffs = dct(dct(pixels, axis=0), axis=1)[:8, :8]
    bits = (coeffs > np.median(coeffs)).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def _header(data: bytes, suffix: str) -> dict[str, Any]:
    """Format, mode, bit depth and acquisition tags, from the header only."""
    if is_dicom(data, suffix):
        import pydicom

        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        meta = {t: str(ds.get(t)) for t in DICOM_TAGS if ds.get(t) not in (None, "")}
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        if spacing:
            meta["PixelSpacing"] = f"{float(spacing[0]):.4g}"
        return {"format": "DICOM", "mode": str(ds.get("PhotometricInterpretation", "")),
                "bits": int(ds.get("BitsStored", 16) or 16), "meta": meta}  # fmt: skip
    img = Image.open(io.BytesIO(data))
    bits = 16 if img.mode.startswith("I;16") else 32 if img.mode in ("I", "F") else 1 if img.mode == "1" else 8
    meta = {}
    try:
        exif = img.getexif()
        meta = {name: str(exif[tag]).strip("\x00 ") for tag, name in EXIF_TAGS.items() if exif.get(tag)}
    except Exception:  # a broken EXIF block is no reason to stop the audit
        meta = {}
    return {"format": img.format or "", "mode": img.mode, "bits": bits, "meta": meta}


def image_facts(index: DataIndex, i: int) -> tuple[ImageFacts, np.ndarray]:
    """Facts and (THUMB, THUMB, 3) uint8 thumbnail of sample `i` (a zero thumbnail when it does not decode)."""
    sample = index.samples[i]
    name = index.name(sample)
    try:
        data, info = index.reader.read(sample.path)
    except OSError as err:
        return ImageFacts(sample.path, 0, 0, "", error=f"{name}: cannot read ({err.strerror or err})"), np.zeros(
            (THUMB, THUMB, 3), np.uint8
        )
    facts = ImageFacts(sample.path, len(data), info.mtime_ns, hashlib.sha256(data).hexdigest())
    thumb = np.zeros((THUMB, THUMB, 3), np.uint8)
    try:
        for k, v in _header(data, Path(sample.path).suffix).items():
            setattr(facts, k, v)
        pixels = decode_bytes(data, Path(sample.path).suffix, name, index.max_pixels)  # (3, H, W)
    except DecodeError as err:
        facts.error = str(err)
        return facts, thumb
    except Exception as err:  # header parsers raise many types for corrupt data
        facts.error = f"{name}: not a readable image ({type(err).__name__}: {err})"
        return facts, thumb
    array = pixels.numpy().transpose(1, 2, 0)  # (H, W, 3)
    facts.height, facts.width = array.shape[:2]
    h = hashlib.sha256(str(array.shape).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    facts.pixel_sha256 = h.hexdigest()
    rgb = array if array.dtype == np.uint8 else np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    facts.phash = f"{phash(img):016x}"
    thumb = np.asarray(img.resize((THUMB, THUMB), Image.Resampling.BILINEAR, reducing_gap=2.0), dtype=np.uint8)
    return facts, thumb


class _Facts(Dataset):
    def __init__(self, index: DataIndex, todo: list[int]) -> None:
        self.index, self.todo = index, todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int):
        facts, thumb = image_facts(self.index, self.todo[k])
        return self.todo[k], facts, thumb


def collect(index: DataIndex, cache_dir: Path, workers: int = 2, log=print) -> tuple[list[ImageFacts], np.ndarray]:
    """Facts and thumbnails (n, THUMB, THUMB, 3) of every sample, from the cache where the file is unchanged."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = _read_cache(cache_dir)
    facts: list[ImageFacts | None] = [None] * len(index.samples)
    thumbs = np.zeros((len(index.samples), THUMB, THUMB, 3), np.uint8)
    todo = []
    for i, s in enumerate(index.samples):
        hit = cached.get(s.path)
        stat = index.reader.info(s.path)
        if hit is not None and stat is not None and (hit[0].size, hit[0].mtime_ns) == (stat.size, stat.mtime_ns):
            facts[i], thumbs[i] = hit
        else:
            todo.append(i)
    if todo:
        log(f"audit: reading {len(todo)} image(s) ({len(index.samples) - len(todo)} from the cache)")
        loader = DataLoader(_Facts(index, todo), batch_size=16, num_workers=min(workers, len(todo)),
                            collate_fn=list)  # fmt: skip
        done = 0
        for batch in loader:
            for i, f, t in batch:
                facts[i], thumbs[i] = f, t
            done += len(batch)
            if done % 256 < len(batch):
                log(f"audit: {done}/{len(todo)} images read")
        _write_cache(cache_dir, facts, thumbs)
    return facts, thumbs  # type: ignore[return-value]


def _read_cache(cache_dir: Path) -> dict[str, tuple[ImageFacts, np.ndarray]]:
    try:
        record = json.loads((cache_dir / "images.json").read_text())
        thumbs = np.load(cache_dir / "thumbs.npy")
        if record.get("version") != CACHE_VERSION or len(record["images"]) != len(thumbs):
            return {}
        return {r["path"]: (ImageFacts(**r), thumbs[k]) for k, r in enumerate(record["images"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # no cache, or an unreadable one: recompute


def _write_cache(cache_dir: Path, facts: list[ImageFacts], thumbs: np.ndarray) -> None:
    tmp = cache_dir / f"thumbs.{os.getpid()}.npy"
    np.save(tmp, thumbs)
    os.replace(tmp, cache_dir / "thumbs.npy")
    write_json_atomic(cache_dir / "images.json", {"version": CACHE_VERSION, "images": [asdict(f) for f in facts]})

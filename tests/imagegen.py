"""Small generated image files for data/store tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def rgb(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def class_folders(root: Path, counts: dict[str, int], size=(40, 56), seed: int = 0, ext: str = ".png") -> Path:
    """root/<class>/img{i}.png with distinct random content; the same file names in every class."""
    for c, (name, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            save(root / name / f"img{i}{ext}", rgb(*size, seed=seed * 1000 + c * 100 + i))
    return root


def split_folders(root: Path, counts: dict[str, dict[str, int]], size=(40, 56)) -> Path:
    """root/<split>/<class>/img{i}.png."""
    for s, (split, per_class) in enumerate(sorted(counts.items())):
        class_folders(root / split, per_class, size, seed=s + 1)
    return root


def write_csv(path: Path, rows: list[dict], columns: list[str], encoding: str = "utf-8") -> Path:
    """A CSV manifest with these columns."""
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    return path


def multilabel_csv(root: Path, labels=("A", "B", "C"), repeats=(3, 1, 1), size: int = 48, seed: int = 0) -> Path:
    """root/labels.csv (path, one 0/1 column per label, split) over images where label j is a bright square in
    corner j of a noisy image; every combination of labels `repeats` times in train, val and test."""
    rng = np.random.default_rng(seed)
    corners = [(0, 0), (0, size // 2), (size // 2, 0), (size // 2, size // 2)]
    rows, i = [], 0
    for split, times in zip(("train", "val", "test"), repeats, strict=True):
        for _ in range(times):
            for combo in range(2 ** len(labels)):
                img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
                present = [(combo >> j) & 1 for j in range(len(labels))]
                for j, on in enumerate(present):
                    if on:
                        y, x = corners[j]
                        img[y + 4 : y + size // 2 - 4, x + 4 : x + size // 2 - 4] = 230
                save(root / f"img{i}.png", img)
                rows.append({"path": f"img{i}.png", **dict(zip(labels, present, strict=True)), "split": split})
                i += 1
    return write_csv(root / "labels.csv", rows, ["path", *labels, "split"])


def make_dicom(path: Path, pixels: np.ndarray, photometric="MONOCHROME2", **attrs) -> Path:
    """A 12-bit single-frame DICOM file of `pixels` with extra attributes (e.g. Manufacturer)."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path

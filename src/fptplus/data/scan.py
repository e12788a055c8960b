"""Decoding every image once before online training, so a bad file is reported up front, not mid-epoch."""

from __future__ import annotations

import csv
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from .decode import DecodeError, undecodable_error
from .sources import DataIndex


class _Check(Dataset):
    def __init__(self, index: DataIndex) -> None:
        self.index = index

    def __len__(self) -> int:
        return len(self.index.samples)

    def __getitem__(self, i: int) -> tuple[str, tuple[int, int] | None]:
        try:
            image = self.index.load(i).image
        except DecodeError as err:
            return str(err), None
        return "", tuple(image.shape[-2:])


def scan_images(index: DataIndex, workers: int = 2, sizes: list | None = None) -> dict[int, str]:
    """{sample index: reason} for every image that does not decode; `sizes` (a list) receives every decodable
    image's (height, width)."""
    loader = DataLoader(_Check(index), batch_size=32, num_workers=workers, collate_fn=list)
    errors: list[str] = []
    for batch in loader:
        errors += [e for e, _ in batch]
        if sizes is not None:
            sizes += [hw for _, hw in batch if hw is not None]
    return {i: e for i, e in enumerate(errors) if e}


def resize_note(sizes: list[tuple[int, int]], resize: str) -> str | None:
    """What squashing does to these images, when any is not square (None when all are, or with --resize pad)."""
    if resize != "squash" or not sizes:
        return None
    ratios = [w / h for h, w in sizes]
    off = sum(1 for r in ratios if abs(r - 1) > 0.02)
    if not off:
        return None
    return (f"{off} of {len(sizes)} images are not square (width/height {min(ratios):.2f}–{max(ratios):.2f}, "
            f"{len(set(sizes))} different sizes): --resize squash (the default, the paper's) stretches them to the "
            "square input; --resize pad keeps their proportions (black borders)")  # fmt: skip


def check_bad(index: DataIndex, bad: dict[int, str], skip: bool, out_dir: Path | None) -> list[int]:
    """Usable sample indices; raises one DecodeError listing every bad file unless `skip`."""
    if bad and not skip:
        raise undecodable_error(list(bad.values()), len(index.samples))
    if bad and out_dir is not None:
        with open(out_dir / "skipped.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path", "error"])
            for i, reason in bad.items():
                w.writerow([index.samples[i].path, reason])
    return [i for i in range(len(index.samples)) if i not in bad]

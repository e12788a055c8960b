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

    def __getitem__(self, i: int) -> str:
        try:
            self.index.load(i)
        except DecodeError as err:
            return str(err)
        return ""


def scan_images(index: DataIndex, workers: int = 2) -> dict[int, str]:
    """{sample index: reason} for every image that does not decode."""
    loader = DataLoader(_Check(index), batch_size=32, num_workers=workers, collate_fn=list)
    errors: list[str] = []
    for batch in loader:
        errors += batch
    return {i: e for i, e in enumerate(errors) if e}


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

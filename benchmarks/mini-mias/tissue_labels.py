"""The control task of the mini-MIAS benchmark: breast tissue (fatty / glandular / dense) instead of abnormal / normal.

    .venv/bin/python benchmarks/mini-mias/tissue_labels.py data/mini-mias/labels.csv  # writes labels-tissue.csv
    .venv/bin/fptplus bench plan benchmarks/plans/mini-mias-tissue.yaml

Same images, same woman-grouped split (the `split` column is kept), the label replaced by MIAS's tissue column (F, G,
D: 106 / 104 / 112 images). If the frozen features read mammograms at all, this — a whole-breast property — is
learnable where "abnormal" (a lesion a few patches wide) is not; it tells a model that sees nothing from a task
that has nothing to see at this data size.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

NAMES = {"F": "fatty", "G": "glandular", "D": "dense"}


def main() -> None:
    src = Path(sys.argv[1])
    with open(src, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = src.with_name("labels-tissue.csv")
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "label": NAMES[r["tissue"]]} for r in rows)
    print(f"{out}: {len(rows)} images")


if __name__ == "__main__":
    main()

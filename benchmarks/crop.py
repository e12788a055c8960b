"""What `--crop foreground` does to real images (issue 31): the content box of every image of a dataset, how much of
the model's input the content fills with and without the crop, the time per image, and a picture.

    .venv/bin/python benchmarks/crop.py data/idrid-dr data/mini-mias --size 224 --picture benchmarks/crop

For each dataset (a folder with labels.csv, as ../shared/data/extract.py lays it out): the box's width and height as
shares of the frame (median, min), the share of the input that is content (pixels brighter than the crop's
threshold) at SIZE px with squash (the default), pad and crop, and the seconds per image the box costs (decoding
excluded). --picture writes `<dataset>.png`: original (squashed), crop; only for datasets whose licence allows a
copy in the repository (--picture-only idrid-dr: mini-MIAS is research-use only and is never committed).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fptplus.data.crop import foreground_box
from fptplus.data.decode import load_image_file
from fptplus.data.views import ViewConfig, Views

THRESHOLD = 20 / 255  # "content" for the share-of-input measure (the crop's own threshold is adaptive)


def content_share(hr: torch.Tensor) -> float:
    lum = hr.amax(0).float() / (255.0 if hr.dtype == torch.uint8 else 1.0)
    return float((lum > THRESHOLD).float().mean())


def measure(folder: Path, size: int, limit: int | None) -> tuple[dict, list[tuple[str, torch.Tensor]]]:
    with open(folder / "labels.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:limit]
    views = {m: Views(ViewConfig(size, size // 4, resize=m)) for m in ("squash", "pad", "foreground")}
    widths, heights, box_s, shares, examples = [], [], [], {m: [] for m in views}, []
    for i, r in enumerate(rows):
        img = load_image_file(folder / r["path"], max_pixels=None).image
        t0 = time.perf_counter()
        top, left, bottom, right = foreground_box(img)
        box_s.append(time.perf_counter() - t0)
        h, w = img.shape[-2:]
        heights.append((bottom - top) / h)
        widths.append((right - left) / w)
        for m, v in views.items():
            shares[m].append(content_share(v.high_res(img)))
        if i < 3:
            examples.append((r["path"], img))
    q = lambda xs: {"median": round(float(np.median(xs)), 3), "min": round(float(np.min(xs)), 3)}  # noqa: E731
    return {
        "images": len(rows),
        "box_width_share": q(widths),
        "box_height_share": q(heights),
        "cropped_images": int(sum(1 for a, b in zip(widths, heights, strict=True) if a < 0.99 or b < 0.99)),
        "content_share_of_input": {m: q(s) for m, s in shares.items()},
        "box_ms_per_image": round(1000 * float(np.median(box_s)), 1),
    }, examples


def picture(examples, size: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    squash, crop = Views(ViewConfig(size, size // 4)), Views(ViewConfig(size, size // 4, resize="foreground"))
    fig, axes = plt.subplots(2, len(examples), figsize=(2.4 * len(examples), 5))
    for j, (name, img) in enumerate(examples):
        for i, (title, v) in enumerate((("squash (default)", squash), ("--crop foreground", crop))):
            axes[i, j].imshow(v.high_res(img).permute(1, 2, 0).numpy(), cmap="gray")
            axes[i, j].set_title(f"{title}\n{Path(name).name}" if i == 0 else title, fontsize=7)
            axes[i, j].axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", type=Path)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--limit", type=int, default=None, help="first N images of each dataset")
    ap.add_argument("--picture", type=Path, default=None, help="folder for the pictures")
    ap.add_argument("--picture-only", nargs="*", default=["idrid-dr"], help="datasets whose picture may be written")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {"machine": f"{platform.processor() or platform.machine()}, 1 thread", "size": args.size}
    for folder in args.datasets:
        results[folder.name], examples = measure(folder, args.size, args.limit)
        print(folder.name, json.dumps(results[folder.name]))
        if args.picture and folder.name in args.picture_only:
            args.picture.mkdir(parents=True, exist_ok=True)
            picture(examples, args.size, args.picture / f"{folder.name}.png")
    if args.picture:
        (args.picture / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

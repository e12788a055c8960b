"""The built-in task: synthetic lesions on a real fundus photograph.

scikit-image ships a real colour fundus photograph (`skimage.data.retina()`, 1411×1411). Every image is a
random view of it (crop, rotation, flips, brightness, gamma and colour variation) at the LPM's resolution; in
the positive class a few small dark-red microaneurysm-like spots (radius of a few pixels at 518 px) are
painted inside the fundus. They are plain at 518 px and all but gone after down-sampling to the side
network's ~126 px: telling the classes apart needs the high-resolution view.

Deterministic: image i depends only on (seed, i); the dataset is cached on disk (PNG, lossless) with a CSV
manifest (path,label,split) holding a stratified 70/10/20 split.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.sources import assign_splits
from ..logs import get_logger, info_of

_log = get_logger("demo")


VERSION = 1


@dataclass(frozen=True)
class RetinaTask:
    """Attributes:
    num_images: images in total (half positive).
    size: pixel size of the images (the LPM's resolution).
    seed: generator seed.
    spots: (min, max) lesions per positive image.
    radius: (min, max) lesion radius in pixels at `size`.
    """

    num_images: int = 240
    size: int = 518
    seed: int = 0
    spots: tuple[int, int] = (3, 6)
    radius: tuple[float, float] = (1.5, 2.5)


def retina_photo() -> np.ndarray:
    """The real photograph, (1411, 1411, 3) uint8 (bundled with scikit-image, no download)."""
    from skimage import data

    return data.retina()


def fundus_mask(img: np.ndarray, threshold: int = 25) -> np.ndarray:
    """Pixels inside the fundus (the photograph's black surround excluded)."""
    return img.max(axis=-1) > threshold


def _view(photo: torch.Tensor, rng: np.random.Generator, size: int) -> torch.Tensor:
    """A random crop/rotation/flip of the photo (3, H, W) float in [0, 1], resized to (3, size, size)."""
    _, h, w = photo.shape
    side = rng.uniform(0.8, 1.0) * min(h, w)
    cy = h / 2 + rng.uniform(-0.05, 0.05) * h
    cx = w / 2 + rng.uniform(-0.05, 0.05) * w
    angle = math.radians(rng.uniform(0, 360))
    cos, sin = math.cos(angle), math.sin(angle)
    scale = side / w
    # affine grid: output [-1, 1]^2 -> input, rotated, scaled and translated
    theta = torch.tensor(
        [[cos * scale, -sin * scale, (cx - w / 2) / (w / 2)], [sin * scale, cos * scale, (cy - h / 2) / (h / 2)]],
        dtype=torch.float32,
    )
    if rng.random() < 0.5:
        theta[:, 0] *= -1  # horizontal flip
    if rng.random() < 0.5:
        theta[:, 1] *= -1  # vertical flip
    # resample the 1411 px photo to 2 × size with the grid, then area-downsample (antialiased)
    grid = F.affine_grid(theta[None], [1, 3, 2 * size, 2 * size], align_corners=False)
    big = F.grid_sample(photo[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return F.avg_pool2d(big, 2)[0]  # (3, size, size)


def _jitter(img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    brightness = rng.uniform(0.8, 1.2)
    gamma = rng.uniform(0.8, 1.25)
    color = torch.tensor(rng.uniform(0.9, 1.1, 3), dtype=torch.float32)[:, None, None]
    return (img.clamp(0, 1) ** gamma * brightness * color).clamp(0, 1)


def paint_spots(img: torch.Tensor, rng: np.random.Generator, task: RetinaTask) -> list[tuple[float, float, float]]:
    """Paints dark-red spots in place inside the fundus; returns their (y, x, radius)."""
    _, h, w = img.shape
    inside = fundus_mask((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    ys, xs = np.nonzero(inside)
    keep = (ys > 20) & (ys < h - 20) & (xs > 20) & (xs < w - 20)
    ys, xs = ys[keep], xs[keep]
    spots = []
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    for _ in range(int(rng.integers(task.spots[0], task.spots[1] + 1))):
        j = int(rng.integers(len(ys)))
        y, x, r = float(ys[j]), float(xs[j]), float(rng.uniform(*task.radius))
        d = ((yy - y) ** 2 + (xx - x) ** 2).sqrt()
        alpha = ((r + 0.5 - d).clamp(0, 1) * 0.9)[None]  # soft-edged disc
        dark_red = torch.tensor([0.32, 0.04, 0.03])[:, None, None] * (0.7 + 0.3 * img.mean())
        img.mul_(1 - alpha).add_(alpha * dark_red)
        spots.append((y, x, r))
    return spots


def make_image(task: RetinaTask, i: int, photo: torch.Tensor | None = None) -> tuple[np.ndarray, int, list]:
    """Image i: (size, size, 3) uint8, its label (odd i: lesions), and its spots (y, x, radius)."""
    photo = photo if photo is not None else torch.from_numpy(retina_photo()).permute(2, 0, 1).float() / 255
    rng = np.random.default_rng([task.seed, i])
    label = i % 2
    img = _jitter(_view(photo, rng, task.size), rng)
    spots = paint_spots(img, rng, task) if label == 1 else []
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), label, spots


def _read_identity(path: Path) -> Any:
    """The cached task's identity, or None when the file is damaged (the images are then generated again)."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None


def build_dataset(task: RetinaTask, root: Path | None = None, log=None) -> Path:
    """Writes (once) the PNGs and labels.csv; returns the CSV path. A complete cache is reused as is."""
    log = info_of(_log, log)
    from PIL import Image

    from .. import pretrained

    root = root or pretrained.cache_dir() / f"demo-retina-v{VERSION}-{task.num_images}x{task.size}-seed{task.seed}"
    manifest = root / "labels.csv"
    info = root / "task.json"
    identity = json.loads(json.dumps({**asdict(task), "version": VERSION}))  # tuples -> lists, as read back
    if manifest.exists() and info.exists() and _read_identity(info) == identity:
        return manifest
    log(f"generating {task.num_images} images at {task.size} px into {root} (synthetic lesions on a real fundus)")
    photo = torch.from_numpy(retina_photo()).permute(2, 0, 1).float() / 255
    rows, spots_all = [], {}
    for i in range(task.num_images):
        img, label, spots = make_image(task, i, photo)
        rel = f"{'lesion' if label else 'healthy'}/img{i:04d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / rel)
        rows.append((rel, "lesion" if label else "healthy", label))
        spots_all[rel] = spots
    splits = assign_splits([r[2] for r in rows], [None] * len(rows), task.seed)
    tmp = manifest.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for (rel, name, _), split in zip(rows, splits, strict=True):
            w.writerow([rel, name, split])
    (root / "spots.json").write_text(json.dumps(spots_all))
    info.write_text(json.dumps(identity))
    os.replace(tmp, manifest)
    return manifest

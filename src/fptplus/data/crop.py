"""Crop to the content before resizing (`--crop foreground`): fundus photographs are 3:2 frames with black side
borders and a clipped disc, mammograms are mostly dark background with a bright label strip.

    decoded (3, h, w)
      └─ thumbnail: every s-th pixel (longer side <= 512), brightest channel per pixel
         └─ content = brighter than max(6 % of full scale, 8 % of the 99th percentile), opened with a 3 × 3 square
            └─ the largest connected piece (a film label or a stray bright line stays out) ─► its bounding box,
               grown by one thumbnail step, in full-resolution pixels
                  └─ the box is cut out; the views then letterbox it (pad, aspect ratio kept) to the input size

An image without a dark background (a chest X-ray, most dermoscopy) keeps (nearly) its whole frame: the crop
changes nothing there. An image whose content is tiny or absent (under 1 % of the frame: a blank or black file)
is left whole rather than cut to noise.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

THUMB_SIDE = 512
FLOOR = 0.06  # of full scale (15 of 255): JPEG noise on black borders stays below it
RELATIVE = 0.08  # of the 99th percentile: a dim image's background is still found
MIN_CONTENT = 0.01  # of the frame: less than this is not content to crop to


def foreground_box(img: Tensor) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the content of a decoded (C, h, w) uint8 or float [0, 1] image; the whole
    frame when no dark background surrounds it."""
    h, w = img.shape[-2:]
    step = max(1, -(-max(h, w) // THUMB_SIDE))
    thumb = img[..., ::step, ::step]
    scale = 255.0 if thumb.dtype == torch.uint8 else 1.0
    lum = thumb.amax(dim=0).float().div_(scale).numpy()  # (th, tw) in [0, 1]
    threshold = max(FLOOR, RELATIVE * float(np.percentile(lum, 99)))
    mask = ndimage.binary_opening(lum > threshold, structure=np.ones((3, 3), bool))
    labels, count = ndimage.label(mask)
    if count == 0:
        return 0, 0, h, w
    sizes = np.bincount(labels.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    if sizes[largest - 1] < MIN_CONTENT * mask.size:
        return 0, 0, h, w
    rows = np.flatnonzero((labels == largest).any(axis=1))
    cols = np.flatnonzero((labels == largest).any(axis=0))
    top, bottom = max(0, (rows[0] - 1) * step), min(h, (rows[-1] + 2) * step)
    left, right = max(0, (cols[0] - 1) * step), min(w, (cols[-1] + 2) * step)
    return int(top), int(left), int(bottom), int(right)


def crop_foreground(img: Tensor) -> Tensor:
    """The content's bounding box of a decoded (C, h, w) image (a view, not a copy)."""
    top, left, bottom, right = foreground_box(img)
    return img[..., top:bottom, left:right]

"""Asymmetric views (paper §3.3, §3.6) with torchvision transforms v2.

    decoded image (3, h, w), uint8 or float [0, 1]
      └─ resize to the LPM resolution ─► `hr`  ─ normalise (backbone mean/std) ─► LPM view   (never augmented)
         ("squash": straight to the square (or H×W) input, the aspect ratio is not kept — the paper's and
          the authors' choice; "pad": the longer side fitted, the rest padded with black, aspect kept;
          "foreground": cut to the content's bounding box first (`data.crop`), then padded like "pad")
             └─ resize to `side_source_size`, round to uint8 ─► side source   (what the feature store keeps)
                   ├─ train: RandomResizedCrop(scale .8–1, ratio .7–1.3) → h-flip → colour jitter (.2, .2)
                   └─ eval:  resize                                               ─► normalise ─► side view

The side view is always made from the side source, online or from the store, so both modes see the same
pixels. Augmentation draws from a per-sample seed (run seed, epoch, sample index) when one is given, which
makes it independent of worker processes and exactly reproducible after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode, v2

from .._utils import Size, to_hw
from ..errors import ConfigError
from .crop import crop_foreground

# "foreground" = `--crop foreground` (which always keeps the aspect ratio: the content box is padded, not squashed)
RESIZE_MODES = ("squash", "pad", "foreground")


@dataclass(frozen=True)
class ViewConfig:
    """Sizes and normalisation of the two views.

    Attributes:
        lpm_size: LPM (high) resolution.
        side_size: side network (low) resolution.
        side_source_size: resolution of the stored image the side view is cut from (default: twice the side
            size, capped at the LPM size).
        mean, std: the backbone's normalisation.
        resize: "squash" (resize to the input size, aspect ratio not kept), "pad" (fit the longer side, pad
            the rest with black: aspect ratio kept) or "foreground" (crop to the content's bounding box, then pad).
    """

    lpm_size: Size
    side_size: Size
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    side_source_size: Size | None = None
    resize: str = "squash"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")

    @property
    def lpm_hw(self) -> tuple[int, int]:
        return to_hw(self.lpm_size, "LPM size")

    @property
    def side_hw(self) -> tuple[int, int]:
        return to_hw(self.side_size, "side size")

    @property
    def source_hw(self) -> tuple[int, int]:
        if self.side_source_size is not None:
            return to_hw(self.side_source_size, "side source size")
        return tuple(min(2 * s, h) for s, h in zip(self.side_hw, self.lpm_hw, strict=True))


def _resize(img: Tensor, hw: tuple[int, int]) -> Tensor:
    if tuple(img.shape[-2:]) == hw:
        return img
    return v2.functional.resize(img, list(hw), interpolation=InterpolationMode.BILINEAR, antialias=True)


def _letterbox(img: Tensor, hw: tuple[int, int]) -> Tensor:
    """Fits the image inside `hw` keeping its aspect ratio, centred on black (zeros of its dtype)."""
    h, w = img.shape[-2:]
    scale = min(hw[0] / h, hw[1] / w)
    inner = (max(1, min(hw[0], round(h * scale))), max(1, min(hw[1], round(w * scale))))
    resized = _resize(img, inner)
    out = torch.zeros((*img.shape[:-2], *hw), dtype=img.dtype)
    top, left = (hw[0] - inner[0]) // 2, (hw[1] - inner[1]) // 2
    out[..., top : top + inner[0], left : left + inner[1]] = resized
    return out


def _to_float(img: Tensor) -> Tensor:
    return v2.functional.to_dtype(img, torch.float32, scale=True)


def _to_uint8(img: Tensor) -> Tensor:
    return img if img.dtype == torch.uint8 else (img.clamp(0, 1) * 255).round_().to(torch.uint8)


class Views:
    """Makes the LPM view, the side source and the side view of decoded images."""

    def __init__(self, cfg: ViewConfig) -> None:
        self.cfg = cfg
        self.normalize = v2.Normalize(list(cfg.mean), list(cfg.std))
        self.augment = augmentation(cfg.side_hw)
        self.image_augment = augmentation(cfg.lpm_hw)

    def high_res(self, img: Tensor) -> Tensor:
        """Decoded (3, h, w) -> `hr` at the LPM resolution, same dtype (squashed, letterboxed with "pad", cropped
        to the content and letterboxed with "foreground")."""
        if self.cfg.resize == "foreground":
            return _letterbox(crop_foreground(img), self.cfg.lpm_hw)
        if self.cfg.resize == "pad":
            return _letterbox(img, self.cfg.lpm_hw)
        return _resize(img, self.cfg.lpm_hw)

    def lpm_view(self, hr: Tensor) -> Tensor:
        """`hr` -> normalised float (3, H, W)."""
        return self.normalize(_to_float(hr))

    def side_source(self, hr: Tensor) -> Tensor:
        """`hr` -> uint8 (3, s, s), the image the side view is cut from."""
        return _to_uint8(_resize(hr, self.cfg.source_hw))

    def side_view(self, source: Tensor, train: bool, seed: int | None = None) -> Tensor:
        """uint8 side source -> normalised float (3, h, w); augmented when `train`."""
        if not train:
            return self.normalize(_to_float(_resize(source, self.cfg.side_hw)))
        return self.normalize(_to_float(_seeded(self.augment, source, seed)))

    def image_view(self, hr: Tensor, train: bool, seed: int | None = None) -> Tensor:
        """The baselines' single view: `hr` -> normalised float (3, H, W), augmented like the side view."""
        if not train:
            return self.lpm_view(hr)
        return self.normalize(_to_float(_seeded(self.image_augment, hr, seed)))


def augmentation(hw: tuple[int, int]) -> v2.Compose:
    """The paper's training augmentation (same for every method): crop, flip, colour jitter."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(list(hw), scale=(0.8, 1.0), ratio=(0.7, 1.3), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=0.2),
        ]
    )


def _seeded(transform, img: Tensor, seed: int | None) -> Tensor:
    if seed is None:
        return transform(img)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(img)


def sample_seed(run_seed: int, epoch: int, index: int) -> int:
    """A distinct, stable augmentation seed per (run, epoch, sample)."""
    return (run_seed * 1_000_003 + epoch) * 10_000_019 + index

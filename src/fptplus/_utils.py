"""Small helpers shared by several modules."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ConfigError

Size = int | tuple[int, int]


def to_hw(size: Size | Sequence[int], what: str = "image size") -> tuple[int, int]:
    """Normalises an int or (H, W) pair to an (H, W) tuple of positive ints."""
    if isinstance(size, int):
        hw = (size, size)
    elif isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) for s in size):
        hw = (int(size[0]), int(size[1]))
    else:
        raise ConfigError(f"{what} must be an int or a (height, width) pair of ints, got {size!r}")
    if min(hw) <= 0:
        raise ConfigError(f"{what} must be positive, got {size!r}")
    return hw


def check_multiple_of_patch(size: tuple[int, int], patch: tuple[int, int], what: str) -> None:
    """Raises a ConfigError naming the nearest valid sizes when `size` is not a multiple of `patch`."""
    bad = [(s, p) for s, p in zip(size, patch, strict=True) if s % p != 0]
    if not bad:
        return
    s, p = bad[0]
    lower, upper = (s // p) * p, (s // p + 1) * p
    nearest = f"{upper}" if lower == 0 else f"{lower} or {upper}"
    raise ConfigError(
        f"{what} {size[0]}x{size[1]} is not a multiple of the patch size {p}: "
        f"{s} is not divisible by {p}. Nearest valid sizes: {nearest}."
    )

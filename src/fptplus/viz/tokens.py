"""Selected-token outlines and prompt cross-attention heat maps on the LPM's input image (paper Fig. 9).

Token positions: LPM token t >= num_prefix is patch (row, col) = divmod(t - num_prefix, grid_w); prefix tokens
(CLS, registers) have no place on the image and are reported separately. Pictures are drawn with exact pixel
positions (numpy, saved by PIL), so a token's outline is its own patch's border pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OUTLINE = (0, 255, 0)


@dataclass
class TokenMap:
    """Per-patch values on the (gh, gw) grid plus what fell on prefix tokens."""

    grid: np.ndarray  # (gh, gw)
    prefix: float


def scatter_tokens(values: np.ndarray, indices: np.ndarray, num_tokens: int, grid: tuple[int, int],
                   num_prefix: int) -> TokenMap:  # fmt: skip
    """Places `values` (k,) of tokens `indices` (k,) on the patch grid; unselected patches get 0."""
    full = np.zeros(num_tokens, dtype=np.float64)
    np.add.at(full, indices, values)
    return TokenMap(full[num_prefix:].reshape(grid), float(full[:num_prefix].sum()))


def selection_counts(indices: np.ndarray, num_tokens: int, grid: tuple[int, int], num_prefix: int) -> TokenMap:
    """How many of the given heads selected each patch: indices (H, k) -> counts on the grid."""
    return scatter_tokens(np.ones(indices.size), indices.reshape(-1), num_tokens, grid, num_prefix)


def prompt_attention_map(attn: np.ndarray, indices: np.ndarray, num_tokens: int, grid: tuple[int, int],
                         num_prefix: int, head: int | None = None, prompt: int | None = None) -> TokenMap:  # fmt: skip
    """Cross-attention of the prompts over the selected tokens, on the patch grid.

    Args:
        attn: (H, P, k) softmax attention of each prompt over its head's selected tokens (rows sum to 1).
        indices: (H, k) the selected token positions per head.
        head: one head, or None for the mean over heads.
        prompt: one prompt, or None for the mean over prompts.

    Returns:
        A map whose patch values plus `prefix` sum to 1 (the mean of distributions is a distribution).
    """
    heads = range(attn.shape[0]) if head is None else [head]
    maps = []
    for h in heads:
        weights = attn[h].mean(axis=0) if prompt is None else attn[h, prompt]  # (k,)
        maps.append(scatter_tokens(weights, indices[h], num_tokens, grid, num_prefix))
    return TokenMap(np.mean([m.grid for m in maps], axis=0), float(np.mean([m.prefix for m in maps])))


def outline_tokens(image: np.ndarray, mask: np.ndarray, patch: tuple[int, int],
                   color: tuple[int, int, int] = OUTLINE, width: int = 1) -> np.ndarray:  # fmt: skip
    """Draws the border (inside the cell) of every patch where `mask` (gh, gw) is true; image (H, W, 3) uint8."""
    out = image.copy()
    ph, pw = patch
    for r, c in zip(*np.nonzero(mask), strict=True):
        y, x = r * ph, c * pw
        cell = out[y : y + ph, x : x + pw]
        cell[:width, :] = color
        cell[-width:, :] = color
        cell[:, :width] = color
        cell[:, -width:] = color
    return out


def count_colors(counts: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """(gh, gw) counts -> (gh, gw, 3) uint8 colours (0 = never drawn)."""
    import matplotlib

    top = max(int(counts.max()), 1)
    rgba = matplotlib.colormaps[cmap](counts / top)
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def outline_counts(image: np.ndarray, counts: np.ndarray, patch: tuple[int, int]) -> np.ndarray:
    """Union over heads: every selected patch outlined, coloured by how many heads selected it."""
    colors = count_colors(counts)
    out = image.copy()
    for r, c in zip(*np.nonzero(counts), strict=True):
        out = outline_tokens(out, _only(counts.shape, r, c), patch, tuple(int(v) for v in colors[r, c]))
    return out


def _only(shape, r, c) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[r, c] = True
    return m


def heat_overlay(image: np.ndarray, grid: np.ndarray, alpha: float = 0.55, cmap: str = "inferno") -> np.ndarray:
    """Blends a (gh, gw) map, scaled to its maximum, over the image (each patch one flat colour)."""
    import matplotlib

    h, w = image.shape[:2]
    gh, gw = grid.shape
    scaled = grid / grid.max() if grid.max() > 0 else grid
    rgb = (matplotlib.colormaps[cmap](scaled)[..., :3] * 255).astype(np.float64)  # (gh, gw, 3)
    big = np.repeat(np.repeat(rgb, h // gh, axis=0), w // gw, axis=1)  # (H, W, 3)
    return ((1 - alpha) * image + alpha * big).round().clip(0, 255).astype(np.uint8)

"""Token outlines land exactly on the selected patches; attention maps are distributions; ROC vs sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from fptplus.viz.curves import roc_curve
from fptplus.viz.tokens import (
    OUTLINE,
    count_colors,
    heat_overlay,
    outline_counts,
    outline_tokens,
    prompt_attention_map,
    selection_counts,
)

GRID, PATCH, PREFIX = (6, 5), (8, 8), 1
N = GRID[0] * GRID[1] + PREFIX
GRAY = np.full((48, 40, 3), 128, np.uint8)


def test_outlines_are_exactly_the_selected_patches():
    rng = np.random.default_rng(0)
    indices = rng.choice(N, 9, replace=False)  # may include the CLS token (index 0)
    counts = selection_counts(indices[None], N, GRID, PREFIX)
    assert counts.prefix == (0 in indices)
    img = outline_tokens(GRAY, counts.grid > 0, PATCH)
    selected = {(int(t) - PREFIX) // GRID[1] * 100 + (int(t) - PREFIX) % GRID[1] for t in indices if t >= PREFIX}
    for r in range(GRID[0]):
        for c in range(GRID[1]):
            y, x = r * PATCH[0], c * PATCH[1]
            corner, centre = img[y, x], img[y + 4, x + 4]
            assert tuple(corner) == (OUTLINE if r * 100 + c in selected else (128, 128, 128))
            assert tuple(centre) == (128, 128, 128)  # the inside stays visible


def test_union_outline_colours_by_count():
    indices = np.array([[1, 2, 3], [2, 3, 4], [3, 4, 5]])  # head 0, 1, 2
    counts = selection_counts(indices, N, GRID, PREFIX)
    assert counts.grid.ravel()[:5].tolist() == [1, 2, 3, 2, 1]
    img = outline_counts(GRAY, counts.grid, PATCH)
    colors = count_colors(counts.grid)
    for c in range(5):
        assert tuple(img[0, c * 8]) == tuple(colors[0, c])
    assert tuple(img[8, 0]) == (128, 128, 128)  # second row untouched
    assert tuple(colors[0, 0]) != tuple(colors[0, 2])


@pytest.mark.parametrize("head,prompt", [(None, None), (1, None), (None, 2), (0, 3)])
def test_prompt_attention_map_is_a_distribution(head, prompt):
    rng = np.random.default_rng(1)
    H, P, k = 3, 4, 7
    logits = rng.normal(size=(H, P, k))
    attn = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    indices = np.stack([rng.choice(N, k, replace=False) for _ in range(H)])
    m = prompt_attention_map(attn, indices, N, GRID, PREFIX, head, prompt)
    assert m.grid.shape == GRID and m.grid.min() >= 0
    assert m.grid.sum() + m.prefix == pytest.approx(1.0)
    h = 0 if head is None else head
    t = indices[h][0]
    if head is not None and t >= PREFIX:
        want = attn[h].mean(0)[0] if prompt is None else attn[h, prompt, 0]
        assert m.grid.ravel()[t - PREFIX] == pytest.approx(want)


def test_heat_overlay_shape_and_range():
    grid = np.zeros(GRID)
    grid[2, 3] = 1.0
    out = heat_overlay(GRAY, grid)
    assert out.shape == GRAY.shape and out.dtype == np.uint8
    assert not np.array_equal(out[16:24, 24:32], out[0:8, 0:8])  # the hot patch differs from a cold one


@pytest.mark.parametrize("seed", [0, 1])
def test_roc_curve_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200).astype(bool)
    s = np.round(rng.normal(size=200) + y, 1)  # ties
    fpr, tpr = roc_curve(y, s)
    want_fpr, want_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, want_fpr)
    np.testing.assert_allclose(tpr, want_tpr)
    assert np.trapezoid(tpr, fpr) == pytest.approx(skm.roc_auc_score(y, s))

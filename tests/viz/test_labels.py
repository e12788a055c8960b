"""The Fig. 1 label placer: clustered points get labels that overlap neither each other nor any point."""

from __future__ import annotations

import itertools

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.text import Text

from fptplus.viz.labels import place_labels

matplotlib.use("Agg")


def _text_boxes(fig, anns):
    fig.canvas.draw()  # annotations find their text positions when drawn
    renderer = fig.canvas.get_renderer()
    return [Text.get_window_extent(a, renderer) for a in anns]  # the text alone, without its leader line


def test_clustered_labels_do_not_overlap_and_stay_in_the_figure():
    rng = np.random.default_rng(0)
    xs = [*10 ** rng.uniform(-0.2, 0.3, 9), 0.005, 100.0]  # nine in a tight clump, two apart (like Fig. 1)
    ys = [*93 + rng.uniform(-1.5, 1.5, 9), 91.7, 82.2]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    ax.scatter(xs, ys, s=200)
    ax.set_xscale("log")
    ax.margins(0.25)
    fig.tight_layout()
    anns = place_labels(ax, xs, ys, [f"method {i} @224\n{100 * i} MB" for i in range(len(xs))], clearance_pt=8)
    boxes = _text_boxes(fig, anns)
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b)
    centres = ax.transData.transform(np.c_[xs, ys])
    for box in boxes:
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1
        assert not any(box.contains(cx, cy) for cx, cy in centres)
    # each label is still joined to its own point
    assert [a.xy for a in anns] == list(zip(xs, ys, strict=True))
    plt.close(fig)


def test_a_lone_point_gets_its_label_next_to_it():
    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.scatter([1.0], [1.0])
    fig.tight_layout()
    (ann,) = place_labels(ax, [1.0], [1.0], ["only"], clearance_pt=5)
    dx, dy = ann.xyann
    assert 0 < np.hypot(dx, dy) < 40  # the nearest free place, in points
    plt.close(fig)

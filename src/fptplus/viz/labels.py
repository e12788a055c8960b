"""Point labels that do not overlap: a greedy placer for scatter plots with clustered points (Fig. 1)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.transforms import Bbox

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.text import Annotation


def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(
    ax: Axes,
    xs: Sequence[float],
    ys: Sequence[float],
    texts: Sequence[str],
    clearance_pt: Sequence[float] | float = 4.0,
    fontsize: float = 7,
) -> list[Annotation]:
    """Put each text near its data point (x, y) so that no two labels overlap, no label covers another point,
    and every label stays inside the figure; a thin line joins a label to its point.

    clearance_pt: per point, the distance (points) a label keeps from its point's centre (e.g. a marker's radius).
    Call after the axes' limits and layout are final: positions are measured in display space. Candidates are
    tried from near to far around the point; when none is free, the one overlapping least is used.
    """
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    clear = [float(clearance_pt)] * len(xs) if isinstance(clearance_pt, int | float) else list(clearance_pt)
    centres = [ax.transData.transform((x, y)) for x, y in zip(xs, ys, strict=True)]
    px = fig.dpi / 72.0  # display pixels per point
    discs = [
        Bbox.from_bounds(cx - r * px, cy - r * px, 2 * r * px, 2 * r * px)
        for (cx, cy), r in zip(centres, clear, strict=True)
    ]
    placed: list[Bbox] = []
    out: list[Annotation] = []
    for i, (x, y, text) in enumerate(zip(xs, ys, texts, strict=True)):
        best: tuple[float, tuple[float, float], Bbox] | None = None
        for offset in _candidates(clear[i]):
            ann = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", fontsize=fontsize,
                              ha="center", va="center")  # fmt: skip
            box = ann.get_window_extent(renderer)
            ann.remove()
            cost = sum(_overlap(box, p) for p in placed)
            cost += sum(math.pi * (3 * px) ** 2 for c in centres if box.contains(c[0], c[1]))  # its own too
            cost += 0.25 * sum(_overlap(box, d) for d in discs)  # covering a dot's edge is tolerated, not free
            inside = box.x0 >= frame.x0 and box.y0 >= frame.y0 and box.x1 <= frame.x1 and box.y1 <= frame.y1
            cost += 0.0 if inside else 1e9
            if best is None or cost < best[0]:
                best = (cost, offset, box)
            if cost == 0:
                break
        assert best is not None
        ann = ax.annotate(text, (x, y), xytext=best[1], textcoords="offset points", fontsize=fontsize,
                          ha="center", va="center",
                          arrowprops=dict(arrowstyle="-", lw=0.5, color="0.3", shrinkA=0, shrinkB=0))  # fmt: skip
        placed.append(best[2])
        out.append(ann)
    return out


def _candidates(clearance: float) -> list[tuple[float, float]]:
    """Offsets (points) around a point, nearest first: right, left, above, below, then the diagonals."""
    angles = [0, 180, 90, 270, 45, 135, 225, 315, 20, 160, 200, 340, 70, 110, 250, 290]
    offsets = []
    for ring in range(12):
        r = clearance + 14 + 8 * ring
        offsets += [(r * math.cos(math.radians(a)) * 1.6, r * math.sin(math.radians(a))) for a in angles]
    return offsets

"""The audit's outputs: OUT/audit.md (what was found, how to read it), pictures of what each shortcut looks like
and of the mean image of each class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..data.index import DataIndex, label_bits
from ..files import display
from .baselines import FAMILIES, FamilyResult
from .features import ImageFacts

SHOW = 8  # thumbnails per row of a shortcut picture


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _ci(ci) -> str:
    return f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""


def class_means(path: Path, index: DataIndex, thumbs: np.ndarray, usable: list[int]) -> None:
    """The mean thumbnail of each class (multi-label: of the images where each label is present)."""
    labels = np.array([index.samples[i].label for i in usable])
    member = (label_bits(labels, len(index.classes)).T == 1 if index.multilabel
              else [labels == c for c in range(len(index.classes))])  # fmt: skip
    fig, axes = plt.subplots(1, len(index.classes), figsize=(2.2 * len(index.classes), 2.6), dpi=110, squeeze=False)
    for ax, name, keep in zip(axes[0], index.classes, member, strict=True):
        mean = thumbs[usable][keep].astype(np.float64).mean(0) if keep.any() else np.zeros(thumbs.shape[1:])
        ax.imshow(mean.astype(np.uint8))
        ax.set_title(f"{name}\n(n={int(keep.sum())})", fontsize=9)
        ax.axis("off")
    fig.suptitle("mean image per class", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def shortcut_picture(path: Path, r: FamilyResult, labels: np.ndarray, classes: list[str], thumbs: np.ndarray) -> str:
    """The images the family's baseline finds most and least like one class; returns that class."""
    assert r.probs is not None
    c = 1 if len(classes) == 2 else max(range(len(classes)), key=lambda j: r.per_class.get(classes[j]) or 0.0)
    order = np.argsort(-r.probs[:, c], kind="stable")
    rows = (("most", order[:SHOW]), ("least", order[::-1][:SHOW]))
    fig, axes = plt.subplots(2, SHOW, figsize=(1.5 * SHOW, 3.9), dpi=110, squeeze=False)
    for row, (what, ids) in enumerate(rows):
        for k in range(SHOW):
            ax = axes[row][k]
            ax.axis("off")
            if k >= len(ids):
                continue
            i = ids[k]
            ax.imshow(thumbs[i])
            hit = (labels[i] == c) == (row == 0)  # green: where the baseline is right to put it
            ax.set_title(f"{classes[labels[i]]}\np={r.probs[i, c]:.2f}", fontsize=7, color="green" if hit else "red")
        axes[row][0].text(-0.15, 0.5, f"{what}\n{classes[c]}", transform=axes[row][0].transAxes, ha="right",
                          va="center", fontsize=8)  # fmt: skip
    fig.suptitle(f"{r.family} features alone (AUC {_pct(r.auc)}): the images they find most / least like "
                 f"{classes[c]} (title: true class; green where right)", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return classes[c]


def render(out: Path, index: DataIndex, facts: list[ImageFacts], thumbs: np.ndarray, usable: list[int], tasks,
           results: dict[str, list[FamilyResult]], record: dict[str, Any]) -> None:  # fmt: skip
    """Pictures and audit.md; adds the picture paths to `record`."""
    pictures = {"class_means": "class_means.png"}
    if usable:
        class_means(out / "class_means.png", index, thumbs, usable)
    threshold = record["options"]["threshold"]
    for task in tasks:
        fams = [r for r in results.get(task.name, []) if r.probs is not None]
        if not fams:
            continue
        best = max(fams, key=lambda r: r.auc or 0.0)
        for r in fams:
            if r is best or {"task": task.name, "family": r.family} in record["shortcuts"]:
                name = f"shortcut_{task.name}_{r.family}.png".replace(" ", "_").replace("/", "_")
                shortcut_picture(out / name, r, task.labels, task.classes, thumbs[usable])
                pictures[f"{task.name}/{r.family}"] = name
    record["pictures"] = pictures
    (out / "audit.md").write_text(markdown(record, threshold), encoding="utf-8")


def markdown(record: dict[str, Any], threshold: float) -> str:
    d = record["data"]
    lines = [f"# Dataset audit: {display(d['root'])}", "",
             f"{d['images']} images, {len(d['classes'])} {'labels (multi-label)' if d['multilabel'] else 'classes'}"
             f" ({d['source']}).", "", "## Verdict", ""]  # fmt: skip
    clean = "- no warning: no trivial feature family separates the labels, no copy crosses a split, label or group"
    lines += [f"- ⚠ {w}" for w in record["warnings"]] or [clean]
    lines += [f"- note: {n}" for n in record["notes"]]
    lines += ["", "## Trivial-feature baselines", "",
              f"Logistic regression on each feature family alone, 5-fold cross-validated (folds never split a group),"
              f" AUC of the out-of-fold probabilities with a bootstrap 95 % CI. 50 = no information; a warning at "
              f"{100 * threshold:.0f}. A high AUC means the labels can be told apart without looking at any lesion: "
              "a model may learn that instead.", ""]  # fmt: skip
    run = record.get("run")
    if run and run.get("test_auc") is not None:
        best = max((f["auc"] or 0 for fams in record["baselines"].values() for f in fams), default=0)
        lines += [f"Trained run {display(run['path'])}: test AUC {_pct(run['test_auc'])}; the best trivial family "
                  f"reaches {_pct(best)} (cross-validated over all images).", ""]  # fmt: skip
    for task, fams in record["baselines"].items():
        if task != "classes":
            lines += [f"### {task}", ""]
        pairs = sorted({p for f in fams for p in f["pairs"]})
        per = sorted({c for f in fams for c in f["per_class"]})
        head = ["family", "AUC [95 % CI]", *(f"{c} vs rest" for c in per), *pairs]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for f in fams:
            value = (_pct(f["auc"]) + _ci(f["auc_ci"])) if f["auc"] is not None else f["note"]
            cells = [f["family"], value, *(_pct(f["per_class"].get(c)) for c in per)]
            cells += [_pct(f["pairs"].get(p)) for p in pairs]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Families: " + "; ".join(f"**{k}**: {v}" for k, v in FAMILIES.items()) + ".", ""]
    o = record["options"]
    detail = record.get("detail_threshold")
    detail = f", and their detail (thumbnail minus its blur) correlating ≥ {detail:.3f}" if detail is not None else ""
    lines += ["## Copies", "", f"Byte-identical files, pixel-identical images, and near-duplicates (64-bit DCT "
              f"perceptual hashes within {o['max_distance']} bits and grey 64 px thumbnails correlating ≥ "
              f"{o['min_correlation']}{detail}: halfway from how alike this dataset's unrelated images are to "
              "identity).", ""]  # fmt: skip
    if record["duplicates"]:
        lines += ["| kind | crosses | images (label, split, group) |", "|---|---|---|"]
        for g in record["duplicates"]:
            imgs = "<br>".join(f"{display(x['path'])} ({x['label']}, {x['split']}, {x['group'] or '–'})"
                               for x in g["images"][:6])  # fmt: skip
            kind = g["kind"] + (f" (≤ {g['distance']} bits)" if g["kind"] == "near-duplicate" else "")
            lines.append(f"| {kind} | {', '.join(g['crosses']) or '–'} | {imgs} |")
    else:
        lines.append("None found.")
    lines += [
        "",
        "## Splits",
        "",
        "| split | " + " | ".join(d["classes"]) + " |",
        "|" + "---|" * (len(d["classes"]) + 1),
    ]
    for split, per in record["balance"].items():
        lines.append(f"| {split} | " + " | ".join(str(per[c]) for c in d["classes"]) + " |")
    leaks = record["leaked_groups"]
    lines += ["", f"Groups in more than one split: {len(leaks)}" + (" — " + ", ".join(
        f"{g} ({'/'.join(s)})" for g, s in list(leaks.items())[:10]) if leaks else "") + ".",
        f"Images that do not decode: {len(record['undecodable'])}.", ""]  # fmt: skip
    lines += [f"- {e}" for e in record["undecodable"][:20]]
    lines += ["## Pictures", ""] + [f"- {k}: ![{k}]({v})" for k, v in record.get("pictures", {}).items()] + [""]
    return "\n".join(lines)

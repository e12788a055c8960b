"""Patient-grouped, class-stratified k-fold cross-validation over a dataset's train+val images.

The test split stays fixed. The train+val images are dealt into `k` folds: a unit is a group (all images of one
patient, `group` column) or a single image, stratified by its majority label. Within a class the units are shuffled
with the seed, then dealt largest first to the fold holding the fewest images of that class (ties: the fold with
fewest images in all, then the lowest fold). Fold `f`'s run validates on fold `f` and trains on the others, so every
train+val image is validated on exactly once (its out-of-fold prediction) and no group spans train and validation.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter, defaultdict

from ..errors import ConfigError, DataError
from .index import DataIndex, Sample


def assign_folds(
    samples: list[Sample], k: int, seed: int, class_names: list[str] | None = None, strata: list[int] | None = None
) -> list[int | None]:
    """The fold (0..k-1) of every train/val sample; None for test samples.

    `strata`: what to stratify on per sample (default: the label; multi-label: `DataIndex.strata()`).

    Raises DataError when a class has fewer than `k` units (groups or images) in train+val: some fold would have
    none of it to validate on.
    """
    if k < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {k}")
    units: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        if s.split != "test":
            units[f"g:{s.group}" if s.group else f"s:{i}"].append(i)
    strata = strata if strata is not None else [s.label for s in samples]
    by_class: dict[int, list[str]] = defaultdict(list)
    for uid, members in units.items():
        votes = Counter(strata[i] for i in members)
        by_class[min(votes, key=lambda c: (-votes[c], c))].append(uid)
    rng = random.Random(seed)
    out: list[int | None] = [None] * len(samples)
    fold_total = [0] * k
    for cls in sorted(by_class):
        uids = sorted(by_class[cls])
        if len(uids) < k:
            name = (class_names[cls] if cls < len(class_names) else "(no label)") if class_names else cls
            raise DataError(f"class {name!r} has {len(uids)} image(s)/group(s) in train+val; {k}-fold cross-validation "
                            f"needs >= {k} (one per fold): use fewer folds")  # fmt: skip
        rng.shuffle(uids)
        uids.sort(key=lambda u: -len(units[u]))  # stable: largest groups first, shuffled among equals
        fold_class = [0] * k
        for uid in uids:
            f = min(range(k), key=lambda j: (fold_class[j], fold_total[j], j))
            fold_class[f] += len(units[uid])
            fold_total[f] += len(units[uid])
            for i in units[uid]:
                out[i] = f
    return out


def apply_fold(index: DataIndex, k: int, fold: int, seed: int) -> DataIndex:
    """The index with fold `fold` of `k` as its validation split and the other folds as training (test kept)."""
    if not 0 <= fold < k:
        raise ConfigError(f"fold must be in 0..{k - 1} for {k} folds, got {fold}")
    folds = assign_folds(index.samples, k, seed, index.classes, index.strata())
    samples = [s if f is None else dataclasses.replace(s, split="val" if f == fold else "train")
               for s, f in zip(index.samples, folds, strict=True)]  # fmt: skip
    out = dataclasses.replace(index, samples=samples)
    out.source = f"{index.source}, fold {fold} of {k}"
    return out

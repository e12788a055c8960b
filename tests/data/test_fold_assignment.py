"""k-fold construction: test fixed, groups never split, classes stratified, every train+val image in one fold."""

from __future__ import annotations

from collections import Counter

import pytest

from fptplus.config import DataConfig
from fptplus.data.folds import apply_fold, assign_folds
from fptplus.data.index import DataIndex, Sample
from fptplus.errors import ConfigError, DataError


def make_samples(n_per_class=(30, 12), group_size=3, test_every=5):
    samples, i = [], 0
    for label, n in enumerate(n_per_class):
        for j in range(n):
            group = f"p{label}-{j // group_size}" if group_size else None
            split = "test" if j % test_every == test_every - 1 else ("val" if j % 7 == 0 else "train")
            samples.append(Sample(f"c{label}/img{j}.png", label, split, group))
            i += 1
    return samples


def test_groups_disjoint_classes_stratified_test_fixed():
    samples = make_samples(group_size=3)
    folds = assign_folds(samples, 4, seed=0)
    assert all((f is None) == (s.split == "test") for s, f in zip(samples, folds, strict=True))
    by_group = {}
    for s, f in zip(samples, folds, strict=True):
        if f is not None:
            assert by_group.setdefault(s.group, f) == f  # a patient's images stay in one fold
    for label in (0, 1):
        per_fold = Counter(f for s, f in zip(samples, folds, strict=True) if f is not None and s.label == label)
        assert sorted(per_fold) == [0, 1, 2, 3]
        assert max(per_fold.values()) - min(per_fold.values()) <= 3  # one group of 3 at most between folds
    assert folds == assign_folds(samples, 4, seed=0)  # deterministic
    assert folds != assign_folds(samples, 4, seed=1)


def test_single_images_balance_exactly():
    samples = make_samples(n_per_class=(40, 20), group_size=0, test_every=1000)
    folds = assign_folds(samples, 5, seed=3)
    for label, n in ((0, 40), (1, 20)):
        per_fold = Counter(f for s, f in zip(samples, folds, strict=True) if s.label == label)
        assert set(per_fold.values()) == {n // 5}


def test_apply_fold_makes_one_fold_the_validation_split():
    samples = make_samples()
    index = DataIndex(root=".", classes=["a", "b"], samples=samples, source="test")
    folds = assign_folds(samples, 3, seed=0)
    seen_val = Counter()
    for f in range(3):
        fold_index = apply_fold(index, 3, f, seed=0)
        assert [s.path for s in fold_index.samples] == [s.path for s in samples]  # same order: the store's rows
        for s, orig, k in zip(fold_index.samples, samples, folds, strict=True):
            assert s.split == ("test" if orig.split == "test" else "val" if k == f else "train")
            seen_val[s.path] += s.split == "val"
        assert "fold" in fold_index.source
    assert all(seen_val[s.path] == 1 for s in samples if s.split != "test")  # each image validated exactly once


def test_impossible_folds_are_refused():
    samples = make_samples(n_per_class=(30, 6), group_size=3, test_every=1000)  # class 1: 2 groups
    with pytest.raises(DataError, match="class 'b' has 2 image"):
        assign_folds(samples, 3, seed=0, class_names=["a", "b"])
    with pytest.raises(ConfigError, match="at least 2 folds"):
        assign_folds(samples, 1, seed=0)
    with pytest.raises(ConfigError, match="folds must be 0"):
        DataConfig(folds=1)
    with pytest.raises(ConfigError, match="given with --folds"):
        DataConfig(fold=0)
    with pytest.raises(ConfigError, match=r"in 0\.\.2"):
        DataConfig(folds=3, fold=3)

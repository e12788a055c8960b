"""Calibration and operating points against scikit-learn and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from fptplus.calibration import (
    apply_temperature,
    at_threshold,
    choose_threshold,
    clinical_report,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_curve,
    roc_points,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
)
from fptplus.errors import ConfigError


def binary(n=300, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.25, n), 0.001, 0.999)
    if ties:
        s = np.round(s, 1)
    return y, np.stack([1 - s, s], axis=1)


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 1])
    # 10 bins: 0.9 -> (0.8, 0.9] acc 1; 0.8 -> (0.7, 0.8] acc 0; 0.7 -> (0.6, 0.7] acc 1; 0.6 -> (0.5, 0.6] acc 1
    want = (abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(1 - 0.6)) / 4
    assert expected_calibration_error(labels, probs, bins=10) == pytest.approx(want)
    curve = reliability_curve(labels, probs, bins=10)
    assert [c["count"] for c in curve] == [1, 1, 1, 1] and curve[-1]["confidence"] == pytest.approx(0.9)
    assert expected_calibration_error(np.array([1, 1]), np.array([[0.0, 1.0], [0.0, 1.0]])) == 0.0


def test_temperature_recovers_an_overconfident_model():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, (4000, 3))
    p_true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in p_true])
    over = np.exp(3 * z) / np.exp(3 * z).sum(1, keepdims=True)  # logits × 3: overconfident
    T = fit_temperature(labels, over)
    grid = np.exp(np.linspace(np.log(0.5), np.log(10), 2001))  # an independent minimum: dense grid
    best = grid[np.argmin([nll(labels, apply_temperature(over, t)) for t in grid])]
    assert pytest.approx(best, rel=2e-3) == T and pytest.approx(3, rel=0.1) == T
    assert expected_calibration_error(labels, apply_temperature(over, T)) < expected_calibration_error(labels, over)
    np.testing.assert_allclose(apply_temperature(over, 1.0), over, atol=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_roc_points_match_sklearn(ties):
    y, p = binary(ties=ties)
    fpr, tpr, thr = roc_points(y == 1, p[:, 1])
    sf, st, sth = skm.roc_curve(y, p[:, 1], drop_intermediate=False)
    np.testing.assert_allclose(fpr, sf)
    np.testing.assert_allclose(tpr, st)
    np.testing.assert_allclose(thr[1:], sth[1:])


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("level", [0.8, 0.9, 0.95])
def test_operating_points_match_sklearn(ties, level):
    y, p = binary(seed=3, ties=ties)
    sf, st, sth = skm.roc_curve(y, p[:, 1], drop_intermediate=False)
    assert sensitivity_at_specificity(y == 1, p[:, 1], level) == pytest.approx(st[sf <= 1 - level].max())
    assert specificity_at_sensitivity(y == 1, p[:, 1], level) == pytest.approx(1 - sf[st >= level].min())
    youden = choose_threshold(y == 1, p[:, 1], "youden")
    assert youden == pytest.approx(sth[np.argmax(st - sf)])
    point = at_threshold(y == 1, p[:, 1], youden)
    pred = (p[:, 1] >= youden).astype(int)
    assert point.sensitivity == pytest.approx(skm.recall_score(y, pred))
    assert point.specificity == pytest.approx(skm.recall_score(1 - y, 1 - pred))
    t = choose_threshold(y == 1, p[:, 1], f"sens:{level}")
    assert at_threshold(y == 1, p[:, 1], t).sensitivity >= level
    assert at_threshold(y == 1, p[:, 1], np.nextafter(t, 2)).sensitivity < level  # the highest such threshold


def test_clinical_report():
    yv, pv = binary(200, seed=4)
    yt, pt = binary(300, seed=5)
    r = clinical_report(yv, pv, yt, pt, ci_samples=200)
    assert r["threshold"]["rule"] == "youden" and r["threshold"]["chosen_on"] == "val"
    lo, hi = r["threshold"]["test_sensitivity_ci"]
    assert lo <= r["threshold"]["test_sensitivity"] <= hi
    op = r["operating_points_test"]["sensitivity_at_specificity_0.9"]
    assert op["ci"][0] <= op["value"] <= op["ci"][1]
    assert r["ece"]["test"] == pytest.approx(expected_calibration_error(yt, pt))
    three = np.full((4, 3), 1 / 3)
    r3 = clinical_report(np.array([0, 1, 2, 0]), three, np.array([0, 1, 2, 2]), three)
    assert "threshold" not in r3 and r3["temperature"] > 0  # multi-class: calibration only
    with pytest.raises(ConfigError, match="youden"):
        choose_threshold(yv == 1, pv[:, 1], "f1")


@pytest.mark.parametrize("rule", ["f1", "sens:", "sens:1.5", "sens:x"])
def test_train_config_refuses_unknown_threshold_rules(rule):
    from fptplus.config import TrainConfig

    with pytest.raises(ConfigError, match="threshold must be 'youden' or 'sens:S'"):
        TrainConfig(threshold=rule)
    assert TrainConfig(threshold="sens:0.9").threshold == "sens:0.9"


def test_a_temperature_is_refused_when_validation_cannot_support_it():
    from fptplus.calibration import guarded_temperature

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 6)
    probs = np.stack([1 - (p := rng.random(6)), p], 1)
    t, why = guarded_temperature(labels, probs)
    assert t == 1.0 and "not fitted: 6 validation images" in why  # the 6-image case once gave T = 0.11
    labels = rng.integers(0, 2, 200)
    noise = np.stack([1 - (p := rng.random(200)), p], 1)  # scores unrelated to the labels: nothing to fit
    t, why = guarded_temperature(labels, noise)
    assert (t == 1.0 and "not applied" in why) or t > 5  # a flat temperature at most
    over = np.where(labels[:, None] == np.arange(2), 0.97, 0.03)  # confident, 80 % right: overconfident
    flip = rng.random(200) < 0.2
    over[flip] = over[flip][:, ::-1]
    t, why = guarded_temperature(labels, over)
    assert t > 1.0 and why.startswith("fitted on 200 validation images")

"""`fptplus compare`: the paired AUC difference against scikit-learn and DeLong's variance, and its refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fptplus.cli import main
from fptplus.compare import compare, read_run_predictions
from fptplus.errors import RunError

CLASSES = ["benign", "malignant"]


def write_seed(path: Path, names, labels, probs, classes=CLASSES, shuffle: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    order = np.arange(len(names)) if shuffle is None else np.random.default_rng(shuffle).permutation(len(names))
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", *(f"p_{c}" for c in classes)])
        for i in order:
            w.writerow([names[i], labels[i], *(f"{p:.6f}" for p in probs[i])])


def scores(rng, y: np.ndarray, signal: float, noise: float) -> np.ndarray:
    """Binary probabilities (n, 2) whose positive score separates the classes by `signal`."""
    s = 1 / (1 + np.exp(-(signal * y + noise * rng.normal(size=len(y)))))
    return np.stack([1 - s, s], 1)


def make_runs(tmp_path: Path, n: int = 300, seeds_a: int = 3, seeds_b: int = 2):
    rng = np.random.default_rng(0)
    y = (rng.random(n) < 0.3).astype(int)
    names = [f"images/{i:04d}.png" for i in range(n)]
    text = [CLASSES[v] for v in y]
    shared = rng.normal(size=n)  # a per-image difficulty both runs see: their errors correlate
    pa = [scores(np.random.default_rng(10 + s), y + 0.3 * shared, 1.6, 1.0) for s in range(seeds_a)]
    pb = [scores(np.random.default_rng(20 + s), y + 0.3 * shared, 1.2, 1.0) for s in range(seeds_b)]
    for s, p in enumerate(pa):
        write_seed(tmp_path / "a" / f"seed-{s}" / "predictions_test.csv", names, text, p)
    for s, p in enumerate(pb):
        write_seed(tmp_path / "b" / f"seed-{s}" / "predictions_test.csv", names, text, p, shuffle=s)
    return y, pa, pb


def delong_variance(y: np.ndarray, sa: np.ndarray, sb: np.ndarray) -> float:
    """DeLong's variance of AUC(a) − AUC(b) for one pair of binary score vectors (textbook structural components)."""
    pos, neg = y == 1, y == 0

    def components(s):
        x, z = s[pos][:, None], s[neg][None, :]
        psi = (x > z) + 0.5 * (x == z)
        return psi.mean(1), psi.mean(0)  # V10 over positives, V01 over negatives

    (a10, a01), (b10, b01) = components(sa), components(sb)
    s10, s01 = np.cov(np.stack([a10, b10])), np.cov(np.stack([a01, b01]))
    contrast = np.array([1.0, -1.0])
    return float(contrast @ s10 @ contrast / pos.sum() + contrast @ s01 @ contrast / neg.sum())


def test_difference_is_scikit_learns_mean_over_seeds(tmp_path):
    y, pa, pb = make_runs(tmp_path)
    result = compare(read_run_predictions(tmp_path / "a"), read_run_predictions(tmp_path / "b"), samples=200)
    ref_a = [roc_auc_score(y, p[:, 1]) for p in pa]
    ref_b = [roc_auc_score(y, p[:, 1]) for p in pb]
    assert result.auc_a == pytest.approx(100 * np.mean(ref_a), abs=1e-3)  # 6-decimal CSV rounding
    assert result.auc_b == pytest.approx(100 * np.mean(ref_b), abs=1e-3)
    assert result.difference == pytest.approx(100 * (np.mean(ref_a) - np.mean(ref_b)), abs=2e-3)
    assert result.std_a == pytest.approx(100 * np.std(ref_a, ddof=1), abs=1e-3)
    assert (result.seeds_a, result.seeds_b, result.n) == (3, 2, 300)
    assert result.ci[0] < result.difference < result.ci[1]


def test_bootstrap_spread_matches_delongs_paired_variance(tmp_path):
    y, pa, pb = make_runs(tmp_path, n=400, seeds_a=1, seeds_b=1)
    result = compare(read_run_predictions(tmp_path / "a"), read_run_predictions(tmp_path / "b"), samples=2000)
    sd = 100 * np.sqrt(delong_variance(y, pa[0][:, 1], pb[0][:, 1]))
    # a 95 % percentile interval spans ~3.92 standard deviations of a normal difference
    assert (result.ci[1] - result.ci[0]) / 3.92 == pytest.approx(sd, rel=0.15)
    # paired: narrower than if the two runs' errors were independent
    unpaired = np.sqrt(np.diff(result.ci_a)[0] ** 2 + np.diff(result.ci_b)[0] ** 2) / 3.92
    assert (result.ci[1] - result.ci[0]) / 3.92 < unpaired


def test_a_run_against_itself_is_no_difference(tmp_path):
    make_runs(tmp_path)
    a = read_run_predictions(tmp_path / "a")
    result = compare(a, read_run_predictions(tmp_path / "a"), samples=200)
    assert result.difference == 0 and result.ci == (0.0, 0.0) and result.p_value == 1.0


def test_rows_are_matched_by_path(tmp_path):
    """Run B's seeds list the images in other orders (shuffled in make_runs); a single-seed B in order agrees."""
    y, _, pb = make_runs(tmp_path, seeds_b=1)
    write_seed(tmp_path / "b_ordered" / "predictions_test.csv", [f"images/{i:04d}.png" for i in range(len(y))],
               [CLASSES[v] for v in y], pb[0])  # fmt: skip
    a = read_run_predictions(tmp_path / "a")
    one = compare(a, read_run_predictions(tmp_path / "b"), samples=300)
    two = compare(a, read_run_predictions(tmp_path / "b_ordered"), samples=300)
    assert one.difference == two.difference and one.ci == two.ci


def test_multiclass_is_macro_one_vs_rest(tmp_path):
    rng = np.random.default_rng(1)
    classes = ["a", "b", "c"]
    y = rng.integers(0, 3, 150)
    names = [f"{i}.png" for i in range(150)]
    logits = [np.eye(3)[y] * k + rng.normal(size=(150, 3)) for k in (1.5, 0.8)]
    probs = [np.exp(z) / np.exp(z).sum(1, keepdims=True) for z in logits]
    for run, p in zip("ab", probs, strict=True):
        write_seed(tmp_path / run / "predictions_test.csv", names, [classes[v] for v in y], p, classes)
    result = compare(read_run_predictions(tmp_path / "a"), read_run_predictions(tmp_path / "b"), samples=200)
    ref = [roc_auc_score(y, p, multi_class="ovr", average="macro") for p in probs]
    assert result.difference == pytest.approx(100 * (ref[0] - ref[1]), abs=2e-3)


def test_multilabel_is_mean_per_label_auc(tmp_path):
    rng = np.random.default_rng(2)
    labels = ["effusion", "nodule"]
    y = (rng.random((120, 2)) < 0.4).astype(int)
    names = [f"{i}.png" for i in range(120)]
    text = [";".join(c for c, b in zip(labels, row, strict=True) if b) for row in y]
    probs = [1 / (1 + np.exp(-(k * y + rng.normal(size=y.shape)))) for k in (2.0, 1.0)]
    for run, p in zip("ab", probs, strict=True):
        write_seed(tmp_path / run / "predictions_test.csv", names, text, p, labels)
    a = read_run_predictions(tmp_path / "a")
    assert a.multilabel
    result = compare(a, read_run_predictions(tmp_path / "b"), samples=200)
    ref = [roc_auc_score(y, p, average="macro") for p in probs]
    assert result.difference == pytest.approx(100 * (ref[0] - ref[1]), abs=2e-3)


def test_refusals_name_the_problem(tmp_path):
    y, pa, pb = make_runs(tmp_path)
    names = [f"images/{i:04d}.png" for i in range(len(y))]
    text = [CLASSES[v] for v in y]
    write_seed(tmp_path / "fewer" / "predictions_test.csv", names[:-5], text[:-5], pb[0][:-5])
    flipped = list(text)
    flipped[7] = CLASSES[1 - y[7]]
    write_seed(tmp_path / "relabelled" / "predictions_test.csv", names, flipped, pb[0])
    a = read_run_predictions(tmp_path / "a")
    with pytest.raises(RunError, match=r"different images.*5 only in the first"):
        compare(a, read_run_predictions(tmp_path / "fewer"))
    with pytest.raises(RunError, match=r"different labels to 1 images.*images/0007.png"):
        compare(a, read_run_predictions(tmp_path / "relabelled"))
    with pytest.raises(RunError, match=r"no predictions_val.csv"):
        read_run_predictions(tmp_path / "a", "val")
    (tmp_path / "cv" / "fold-0").mkdir(parents=True)
    with pytest.raises(RunError, match="cross-validation: compare one fold"):
        read_run_predictions(tmp_path / "cv")
    write_seed(tmp_path / "a" / "seed-9" / "predictions_test.csv", names[:-1], text[:-1], pa[0][:-1])
    with pytest.raises(RunError, match=r"seed-9.*seeds of one run must share their split"):
        read_run_predictions(tmp_path / "a")
    with pytest.raises(RunError, match="at least 100"):
        compare(read_run_predictions(tmp_path / "b"), read_run_predictions(tmp_path / "b"), samples=10)


def test_cli_prints_and_writes_json(tmp_path, capsys):
    make_runs(tmp_path)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--samples", "200"]) == 0
    out = capsys.readouterr().out
    assert "A − B:" in out and "paired bootstrap" in out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--samples", "200", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["seeds_a"] == 3 and record["ci"][0] < record["difference"] < record["ci"][1]
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage,message",
    [(lambda t: t[: len(t) * 2 // 3], r"line \d+ has no path or no label"),
     (lambda t: t.replace("\n", "\n,benign,0.5,0.5\n", 1), r"line 2 has no path or no label"),
     (lambda t: t.replace(t.splitlines()[1].rsplit(",", 1)[1], "nan", 1), "NaN or infinite probabilities"),
     (lambda t: t.replace("p_benign,p_malignant", "p_benign,p_benign", 1), "names a column twice"),
     (lambda t: t.replace(t.splitlines()[1].rsplit(",", 1)[1], "high", 1), "missing or not a number")],
)  # fmt: skip
def test_a_damaged_predictions_file_is_one_line_naming_it(tmp_path, damage, message):
    make_runs(tmp_path, n=40, seeds_a=1, seeds_b=1)
    path = tmp_path / "a" / "seed-0" / "predictions_test.csv"
    path.write_text(damage(path.read_text()))
    with pytest.raises(RunError, match=message):
        read_run_predictions(tmp_path / "a")


def test_resampling_seeds_with_one_seed_per_run_is_the_images_only_interval(tmp_path):
    make_runs(tmp_path, seeds_a=1, seeds_b=1)
    a, b = read_run_predictions(tmp_path / "a"), read_run_predictions(tmp_path / "b")
    plain, both = compare(a, b, samples=300), compare(a, b, samples=300, seeds=True)
    assert both.ci == plain.ci and both.p_value == plain.p_value and both.seeds_resampled
    assert "and, per run, its seeds" in both.summary() and "its seeds" not in plain.summary()


def test_resampling_seeds_adds_the_seed_variance_of_the_mean(tmp_path):
    """Seeds of A far apart (AUC ~70 / 80 / 90): the interval's variance grows by var(seed AUCs) / S, the variance
    of the mean of S seeds drawn with replacement (population variance), over the images-only interval's."""
    rng = np.random.default_rng(1)
    n = 3000
    y = (rng.random(n) < 0.4).astype(int)
    names, text = [f"i{i}.png" for i in range(n)], [CLASSES[v] for v in y]
    for s, signal in enumerate((0.8, 1.5, 2.6)):
        write_seed(tmp_path / "a" / f"seed-{s}" / "predictions_test.csv", names, text,
                   scores(np.random.default_rng(s), y, signal, 1.0))  # fmt: skip
    write_seed(tmp_path / "b" / "predictions_test.csv", names, text, scores(np.random.default_rng(9), y, 1.5, 1.0))
    a, b = read_run_predictions(tmp_path / "a"), read_run_predictions(tmp_path / "b")
    plain, both = compare(a, b, samples=2000), compare(a, b, samples=2000, seeds=True)
    per_seed = 100 * np.array([roc_auc_score(y, p[:, 1]) for p in a.probs])
    var_images = ((plain.ci[1] - plain.ci[0]) / 3.92) ** 2
    expected = np.sqrt(var_images + per_seed.var() / 3)
    assert (both.ci[1] - both.ci[0]) / 3.92 == pytest.approx(expected, rel=0.15)
    assert both.ci[1] - both.ci[0] > 2 * (plain.ci[1] - plain.ci[0])
    assert both.difference == plain.difference  # the point estimate is the runs' own mean over seeds

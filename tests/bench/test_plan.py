"""Benchmark plans: parsing, running what is missing (resumable, skipping finished runs), records, rendering."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from fptplus.bench.driver import collect, execute
from fptplus.bench.plan import Plan
from fptplus.bench.plan_report import render
from fptplus.compare import compare, read_run_predictions
from fptplus.errors import ConfigError
from imagegen import class_folders

from conftest import TINY

SIDE = {"side_depth": 2, "reduction": 2, "num_prompts": 4}


def plan_dict(**extra):
    return {
        "name": "tiny",
        "data": "data",
        "weights": "none",
        "backbone": "vit_base_patch16_224",
        "backbone_kwargs": dict(TINY),
        "pair": ["neg", "pos"],
        "defaults": {"workers": 0, "batch_size": 4},
        "rows": [
            {"name": "fpt_plus", "method": "fpt_plus", "img_size": [64], "lr": [1e-3, 2e-3], "epochs": 1,
             "seeds": [0, 1], "model": SIDE},
            {"name": "linear", "method": "linear", "img_size": 64, "epochs": 2, "seeds": [0], "features": "fpt_plus"},
            {"name": "bitfit", "method": "bitfit", "img_size": 32, "epochs": 1, "seeds": [0]},
        ],
        "memory": {"backbones": ["vit_base_patch16_224"], "img_sizes": [32], "batch_size": 2,
                   "overrides": {"side_depth": 2}},
        **extra,
    }  # fmt: skip


def write_plan(tmp_path, **extra):
    class_folders(tmp_path / "data", {"neg": 8, "pos": 8}, size=(48, 48))
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan_dict(**extra)))
    return path


def test_plan_expands_rows_and_refuses_mistakes(tmp_path):
    plan = Plan.load(write_plan(tmp_path))
    assert [r.folder for r in plan.runs] == ["fpt_plus-64-lr0.001", "fpt_plus-64-lr0.002", "linear-64", "bitfit-32"]
    assert plan.data == (tmp_path / "data").resolve() and plan.weights == "none"
    bad_rows = [
        ({"rows": [{"name": "x", "method": "nope", "img_size": 64, "epochs": 1}]}, "unknown method 'nope'"),
        ({"rows": [{"name": "x", "method": "linear", "img_size": 64}]}, "name, method, img_size, epochs are required"),
        ({"rows": [{"name": "l", "method": "linear", "img_size": 64, "epochs": 1, "features": "fpt_plus"}]},
         "reads the store of row 'fpt_plus' at 64 px: no such row"),
        ({"colour": "blue"}, "unknown keys ['colour']"),
        ({"compare": [["fpt_plus@64", "lora@64"]]}, "compare[0]: no row 'lora' at 64 px"),
        ({"compare": [["fpt_plus-64", "linear@64"]]}, "compare[0]: 'fpt_plus-64' should be ROW@SIZE"),
        ({"compare": [["fpt_plus@64"]]}, "compare[0]: expected a pair"),
    ]  # fmt: skip
    for extra, message in bad_rows:
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(plan_dict(**extra)))
        with pytest.raises(
            ConfigError, match=rf"plan .*bad\.yaml: .*{message}".replace("[", r"\[").replace("(", r"\(")
        ):
            Plan.load(tmp_path / "bad.yaml")


def test_run_collect_render_skip_and_render_from_records(tmp_path, monkeypatch):
    plan = Plan.load(write_plan(tmp_path, compare=[["fpt_plus@64", "linear@64"], ["bitfit@32", "fpt_plus@64"]]))
    runs, results, lines = tmp_path / "runs", tmp_path / "results", []
    execute(plan, runs, log=lines.append)
    assert sorted(p.name for p in runs.iterdir()) == [
        "bitfit-32",
        "fpt_plus-64-lr0.001",
        "fpt_plus-64-lr0.002",
        "linear-64",
        "store-fpt_plus-64",
    ]  # one store for both lrs
    records = collect(plan, runs, results)
    assert [r["folder"] for r in records] == [r.folder for r in plan.runs]
    fpt = records[0]
    assert len(fpt["auc"]) == 2 and len(fpt["pair_auc"]) == 2 and fpt["lr"] == 1e-3 and fpt["model"]["side_depth"] == 2
    rows = render(plan, records, results, log=lines.append, runs=runs)
    assert sum(r["selected"] for r in rows if r["name"] == "fpt_plus") == 1  # validation keeps one lr
    kept = next(r["folder"] for r in rows if r["name"] == "fpt_plus" and r["selected"])
    pairs = json.loads((results / "compare.json").read_text())
    assert [(c["a"], c["folder_a"], c["folder_b"]) for c in pairs] == [
        ("fpt_plus@64", kept, "linear-64"), ("bitfit@32", "bitfit-32", kept)]  # fmt: skip
    direct = compare(read_run_predictions(runs / kept), read_run_predictions(runs / "linear-64")).to_dict()
    assert pairs[0]["difference"] == direct["difference"] and pairs[0]["ci"] == list(direct["ci"])
    seeds = compare(read_run_predictions(runs / kept), read_run_predictions(runs / "linear-64"), seeds=True)
    assert pairs[0]["ci_seeds"] == list(seeds.ci) and pairs[0]["p_value_seeds"] == seeds.p_value
    assert "| fpt_plus@64 (`" in (results / "compare.md").read_text()
    table = (results / "table.md").read_text()
    assert "| linear (stored features) | 64 |" in table and "| bitfit | 32 |" in table and "neg vs pos AUC" in table
    for name in ("memory.md", "fig_auc_memory.png", "fig_auc_resolution.png", "table1.md", "runs.json"):
        assert (results / name).exists(), name
    lines.clear()
    execute(plan, runs, log=lines.append)  # everything finished: nothing is trained again
    assert len([line for line in lines if "finished earlier" in line]) == 4
    shutil.rmtree(runs)  # the run folders are gone (another machine): the records still render the same table
    memory = (results / "memory.md").read_text()

    def no_measuring(*args, **kwargs):
        raise AssertionError("memory tables recomputed although nothing they depend on changed")

    with monkeypatch.context() as m:
        m.setattr("fptplus.bench.memory.memory_table", no_measuring)
        again = render(plan, collect(plan, runs, results), results, log=lambda *_: None, runs=runs)
    assert [r["auc"] for r in again] == [r["auc"] for r in rows]
    assert json.loads((results / "compare.json").read_text()) == pairs  # the committed comparisons are kept
    retrained = [dict(r, auc=[a - 0.01 for a in r["auc"]]) if r["folder"] == "linear-64" else r for r in records]
    stale_lines = []  # linear-64 trained again elsewhere (its record moved by 1 point): its old pairing is not reused
    render(plan, retrained, results, log=stale_lines.append, runs=runs)
    assert [c["a"] for c in json.loads((results / "compare.json").read_text())] == ["bitfit@32"]
    assert any("predates the current run of linear-64" in line for line in stale_lines)
    (results / "compare.json").write_text(json.dumps(pairs))
    assert json.loads((results / "runs.json").read_text()) == records
    assert (results / "memory.md").read_text() == memory and memory.startswith("<!-- memory tables sha256:")
    plan.memory.batch_size = 8  # the memory section changed: recomputed
    render(plan, records, results, log=lambda *_: None)
    assert (results / "memory.md").read_text() != memory and "batch 8" in (results / "memory.md").read_text()


def test_an_interrupted_run_is_resumed(tmp_path):
    plan = Plan.load(write_plan(tmp_path, rows=[{"name": "bitfit", "method": "bitfit", "img_size": 32, "epochs": 2,
                                                   "seeds": [0]}]))  # fmt: skip
    runs = tmp_path / "runs"
    execute(plan, runs, log=lambda *_: None)
    (runs / "bitfit-32" / "results.json").unlink()  # as if killed after its last epoch's checkpoint
    lines = []
    execute(plan, runs, log=lines.append)
    assert any(line == "resuming bitfit-32" for line in lines) and (runs / "bitfit-32" / "results.json").exists()


def test_a_failing_run_is_reported_and_the_others_still_run(tmp_path):
    rows = [{"name": "bad", "method": "bitfit", "img_size": 33, "epochs": 1, "seeds": [0]},  # not a patch multiple
            {"name": "bitfit", "method": "bitfit", "img_size": 32, "epochs": 1, "seeds": [0]}]  # fmt: skip
    plan = Plan.load(write_plan(tmp_path, rows=rows))
    failed = execute(plan, tmp_path / "runs", log=lambda *_: None)
    assert len(failed) == 1 and failed[0].startswith("bad-33: ") and "not a multiple of the patch size" in failed[0]
    assert (tmp_path / "runs" / "bitfit-32" / "results.json").exists()


def test_variant_rows_stay_out_of_the_paper_table(tmp_path):
    """A row named otherwise than its method (an ablation, an int8 store) at the same resolution as the method's own
    row is listed in table.md by its name and never replaces the method's row in table1.md."""
    plan = Plan.load(write_plan(tmp_path))
    runs, results = tmp_path / "runs", tmp_path / "results"
    execute(plan, runs, only=["bitfit"], log=lambda *_: None)
    records = collect(plan, runs, results)
    variant = {**records[0], "name": "bitfit_int8", "folder": "bitfit_int8-32", "auc": [0.123]}
    render(plan, [*records, variant], results, log=lambda *_: None)
    assert "| bitfit_int8 | 32 |" in (results / "table.md").read_text()
    table1 = (results / "table1.md").read_text()
    assert "12.30" not in table1 and f"{100 * records[0]['auc'][0]:.2f}" in table1


def test_cv_folds_rows_choose_the_lr_by_cross_validation(tmp_path):
    """Each lr of a `cv_folds` row trains K folds of train + val on the row's one store; only the lr with the best
    mean fold validation AUC (recomputed here from the fold runs' own results) is trained on the standard split."""
    row = {"name": "fpt_plus", "method": "fpt_plus", "img_size": 64, "lr": [1e-3, 3e-2], "epochs": 1, "seeds": [0],
           "model": SIDE, "cv_folds": 2}  # fmt: skip
    plan = Plan.load(write_plan(tmp_path, rows=[row], compare=[]))
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert execute(plan, runs, log=lambda *_: None) == []

    def fold_mean(folder):
        aucs = [json.loads((runs / "cv" / folder / f"fold-{f}" / "results.json").read_text())["val"]["auc"]
                for f in range(2)]  # fmt: skip
        return sum(aucs) / 2

    folders = ["fpt_plus-64-lr0.001", "fpt_plus-64-lr0.03"]
    winner = max(folders, key=fold_mean)
    loser = next(f for f in folders if f != winner)
    assert (runs / winner / "results.json").exists() and not (runs / loser).exists()
    assert sorted(p.name for p in runs.iterdir()) == ["cv", winner, "store-fpt_plus-64"]  # one store for all
    assert not any((runs / "cv" / f / "store").exists() for f in folders)
    lines = []
    assert execute(plan, runs, log=lines.append) == []  # nothing is trained twice
    assert f"{winner}: finished earlier, skipping" in lines
    assert any(line.startswith(f"{loser}: 2-fold CV AUC") and "not trained" in line for line in lines)
    assert not any(line.startswith(("training", "running", "resuming")) for line in lines)
    records = collect(plan, runs, results)
    by = {r["folder"]: r for r in records}
    assert by[loser]["auc"] == [] and len(by[loser]["cv_auc"]) == 2 and len(by[winner]["auc"]) == 1
    assert abs(sum(by[winner]["cv_auc"]) / 2 - fold_mean(winner)) < 1e-9
    rows = render(plan, records, results, log=lambda *_: None)
    assert [r["selected"] for r in rows] == [r["folder"] == winner for r in rows]
    table = (results / "table.md").read_text()
    assert f"| (fpt_plus) | 64 | {by[loser]['lr']:g} | CV 1 × 1 | CV2 " in table
    assert "| fpt_plus | 64 |" in table and "; val " in table


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"cv_folds": 1}, "cv_folds must be 0"),
        ({"cv_folds": "5"}, "cv_folds must be 0"),
        ({"cv_folds": 5, "features": "x"}, "drop cv_folds"),
    ],
)
def test_cv_folds_mistakes_are_refused(tmp_path, extra, message):
    row = {"name": "l", "method": "linear", "img_size": 64, "epochs": 1, **extra}
    with pytest.raises(ConfigError, match=message):
        Plan.load(write_plan(tmp_path, rows=[row], compare=[]))


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "benchmarks" / "plans").glob("*.yaml")), ids=str)
def test_every_committed_plan_loads(path):
    """The plans in benchmarks/plans parse, expand and name existing rows in their `compare` pairs (no data read)."""
    plan = Plan.load(path)
    assert plan.runs and len({r.folder for r in plan.runs}) == len(plan.runs)

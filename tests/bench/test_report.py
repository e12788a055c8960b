"""`fptplus report` from tiny runs, and `fptplus bench memory` on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fptplus.bench.report import load_run, write_report
from fptplus.cli import main

from conftest import TINY, tiny_cli_args


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    common = tiny_cli_args(root)
    fpt = ["--img-size", "64", "--side-img-size", "32", "--side-depth", "2", "--reduction", "2"]
    out = {}
    for name, extra in (("fpt_plus", [*fpt, "--seeds", "0,1"]), ("linear", ["--img-size", "64"]),
                        ("linear32", ["--img-size", "32"])):  # fmt: skip
        method = name.rstrip("0123456789")
        assert main(["train", "--method", method, "--out", str(root / name), *common, *extra]) == 0
        out[name] = root / name
    return out


def test_load_run_reads_single_and_multi_seed_runs(runs):
    multi = load_run(runs["fpt_plus"])
    assert multi.method == "fpt_plus" and len(multi.aucs) == 2 and multi.dataset == "data"
    single = load_run(runs["linear"])
    assert single.method == "linear" and len(single.aucs) == 1 and single.img_size == (64, 64)


def test_report_tables_and_figures(runs, tmp_path):
    written = write_report(list(runs.values()), tmp_path / "report", gpu_mb=1.0, gpu_name="tiny GPU")
    table = (tmp_path / "report" / "table1.md").read_text()
    assert "| fpt_plus @64 |" in table and "| linear @32 |" in table and "PPE" in table and "PME" in table
    records = json.loads((tmp_path / "report" / "report.json").read_text())["table1"]
    fpt = next(r for r in records if r["method"] == "fpt_plus @64")
    assert fpt["memory_mb"] < fpt["full_ft_memory_mb"] and fpt["ppe"] is not None
    assert (tmp_path / "report" / "table1.csv").read_text().startswith("Method,Params %,Mem. MB")
    table2 = (tmp_path / "report" / "table2.md").read_text()  # two resolutions among the runs
    assert "Mem. 32" in table2 and "Mem. 64" in table2
    for name, shape in (("fig1", (600, 840)), ("fig2", (600, 1080))):
        img = np.asarray(Image.open(written[name]).convert("L"))
        assert img.shape == shape and img.std() > 5  # written, readable, not blank


def test_report_refuses_unfinished_or_foreign_folders(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_bench_memory_cli(capsys):
    args = ["bench", "memory", "--backbone", "vit_base_patch16_224", "--backbone-kwargs", json.dumps(TINY),
            "--img-size", "64", "--batch-size", "4", "--methods", "full_ft,linear,fpt_plus", "--device", "meta",
            "--set", "side_depth=2", "--set", "reduction=2"]  # fmt: skip
    assert main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    labels = {(r["label"], r["attention"]) for r in rows}
    assert ("fpt_plus (store)", "eager") in labels and ("fpt_plus (online)", "fused") in labels
    full = next(r for r in rows if r["method"] == "full_ft" and r["attention"] == "eager")
    assert full["ratio_to_full_ft"] == 1.0
    assert all(r["ratio_to_full_ft"] > 0 for r in rows)
    assert main(args) == 0
    assert "vs full FT" in capsys.readouterr().out

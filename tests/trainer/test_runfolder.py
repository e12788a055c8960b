"""Run folders: where a new run may go (--out / --overwrite), and every damaged record it keeps is one clear error."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from fptplus.cli import main
from fptplus.trainer.checkpoint import CheckpointError, load_state
from imagegen import class_folders, write_csv
from storetools import tiny_weights

from conftest import TINY

MODEL_FLAGS = ["--img-size", "64", "--side-img-size", "32", "--backbone-kwargs", repr(TINY), "--side-depth", "2",
               "--reduction", "2", "--num-prompts", "4"]  # fmt: skip


def train_args(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--weights", str(tiny_weights()), "--epochs", "1",
            "--batch-size", "4", "--num-workers", "0", "--bootstrap", "0", *MODEL_FLAGS, *extra]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return class_folders(tmp_path_factory.mktemp("d") / "data", {"neg": 8, "pos": 8}, size=(48, 48))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("r") / "run"
    assert main(train_args(data, run)) == 0
    return run


# --- where a new run may go ----------------------------------------------------------------------------------


def test_out_into_a_folder_of_other_files_is_refused_unless_overwrite(data, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.docx").write_text("precious")
    (out / "log.txt").write_text("my own log")
    assert main(train_args(data, out)) == 2
    assert "is not empty (log.txt, thesis.docx) and is not an fptplus run" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "thesis.docx"]  # nothing written
    assert main(train_args(data, out, "--overwrite")) == 0
    assert (out / "thesis.docx").read_text() == "precious" and (out / "results.json").exists()
    assert (out / "log.txt").read_text().startswith("my own log")  # appended to, never replaced
    assert main(train_args(data, out, "--overwrite")) == 0  # a second --overwrite: still only fptplus's files go
    assert (out / "thesis.docx").read_text() == "precious" and (out / "log.txt").read_text().startswith("my own log")


def test_overwrite_never_deletes_another_tools_files(data, tmp_path, capsys):
    """A folder of another tool's run (its own config.yaml, checkpoints/, seed-42/, tensorboard/) is not a run."""
    out = tmp_path / "resnet"
    mine = {"config.yaml": "lr: 0.1\n", "checkpoints/resnet50_epoch90.pt": "weights", "seed-42/notes.txt": "notes",
            "tensorboard/events.out.tfevents.1.host": "events"}  # fmt: skip
    for rel, text in mine.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    assert main(train_args(data, out)) == 2
    assert "is not an fptplus run" in capsys.readouterr().err
    assert main(train_args(data, out, "--overwrite")) == 2  # its config.yaml would be read as the run's
    assert "holds files with the names a run writes (config.yaml)" in capsys.readouterr().err
    (out / "config.yaml").rename(out / "resnet.yaml")
    mine["resnet.yaml"] = mine.pop("config.yaml")
    assert main(train_args(data, out, "--overwrite")) == 0
    assert main(train_args(data, out, "--overwrite")) == 0  # over our own run in that folder
    for rel, text in mine.items():
        assert (out / rel).read_text() == text, rel
    assert (out / "checkpoints" / "best" / "model.safetensors").exists()


@pytest.mark.parametrize("where", ["data", "data/neg", "data/runs/new"])
def test_out_inside_the_dataset_is_refused_even_with_overwrite(data, where, capsys):
    out = data.parent / where
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    assert main(train_args(data, out, "--overwrite")) == 2
    assert "the dataset folder" in capsys.readouterr().err
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


def test_out_next_to_a_csv_manifest_is_refused(data, tmp_path, capsys):
    rows = [{"path": str(p), "label": p.parent.name} for p in sorted(data.rglob("*.png"))]
    csv_path = write_csv(tmp_path / "labels.csv", rows, ["path", "label"])
    assert main(train_args(csv_path, tmp_path, "--overwrite")) == 2
    assert "is the dataset folder" in capsys.readouterr().err


def test_overwrite_of_a_run_removes_only_its_files_and_reuses_its_store(data, trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert main(["evaluate", str(run), "--split", "val", "--checkpoint", "last"]) == 0  # fptplus writes more
    (run / "notes.txt").write_text("keep me")  # the user's files, added to the run folder
    (run / "seed-5").mkdir()
    (run / "seed-5" / "results.json").write_text("{}")
    marker = json.loads((run / ".fptplus-run.json").read_text())
    assert "eval-val-last.json" in marker["files"] and "notes.txt" not in marker["files"]
    capsys.readouterr()
    assert main(train_args(data, run)) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert main(train_args(data, run, "--overwrite")) == 0
    assert (run / "notes.txt").read_text() == "keep me" and (run / "seed-5" / "results.json").read_text() == "{}"
    assert not (run / "eval-val-last.json").exists()  # what fptplus wrote went
    assert "complete store already present" in (run / "log.txt").read_text()


# --- damaged records: one line naming the file, never a traceback ------------------------------------------------


def evaluate_cli(run):
    return subprocess.run([sys.executable, "-m", "fptplus.cli", "evaluate", str(run)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def flip_last_byte(path):
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))


DAMAGE = {
    "run.json not JSON": ("run.json", lambda p: p.write_text("{seeds"), r"run\.json is damaged: not valid JSON"),
    "run.json no seeds": ("run.json", lambda p: p.write_text("{}"), r"run\.json is damaged: missing key 'seeds'"),
    "run.json bad seeds": ("run.json", lambda p: p.write_text('{"seeds": ["a"]}'), r"list of integers"),
    "classes.json": ("classes.json", lambda p: p.write_bytes(b"\xff\xfe"), r"classes\.json is damaged: not UTF-8"),
    "config.yaml type": (
        "config.yaml",
        lambda p: p.write_text(p.read_text().replace("epochs: 1", "epochs: many")),
        r"config\.yaml: train\.epochs must be an integer, got 'many'",
    ),
    "config.yaml syntax": ("config.yaml", lambda p: p.write_text("model: [\n"), r"config\.yaml is not valid YAML"),
    "config.yaml bytes": ("config.yaml", lambda p: p.write_bytes(b"method: fpt\xe9"), r"config\.yaml is not UTF-8"),
    "meta.json": (
        "checkpoints/best/meta.json",
        lambda p: p.write_text('{"tensors": 3}'),
        r"meta\.json is damaged: 'tensors' should be an object",
    ),
    "checkpoint bytes": (
        "checkpoints/best/model.safetensors",
        flip_last_byte,
        r"model\.safetensors is damaged: its sha256 differs",
    ),
    "splits.csv": (
        "splits.csv",
        lambda p: p.write_bytes(p.read_bytes() + "x,é\n".encode("latin-1")),
        r"splits\.csv is not UTF-8 text",
    ),
    "store manifest": (
        "store/manifest.json",
        lambda p: p.write_text('{"complete": true}'),
        r"manifest\.json is damaged: missing key",
    ),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_run_files_are_one_line_errors(trained, tmp_path, case):
    name, damage, message = DAMAGE[case]
    run = tmp_path / "run"
    shutil.copytree(trained, run, symlinks=True)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "store": str(run / "store")}))  # this copy's own store
    damage(run / name)
    proc = evaluate_cli(run)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("fptplus evaluate: error: ")
    assert re.search(message, proc.stderr), proc.stderr


def test_a_flipped_byte_in_the_training_state_is_refused(trained, tmp_path):
    last = tmp_path / "last"
    shutil.copytree(trained / "checkpoints" / "last", last)
    assert load_state(last)["epoch"] == 0
    flip_last_byte(last / "state.pt")
    with pytest.raises(CheckpointError, match=r"state\.pt is damaged: its sha256 differs"):
        load_state(last)


def test_checkpoint_meta_records_the_file_hashes(trained):
    from fptplus.weights import file_sha256

    meta = json.loads((trained / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["format"] == 2
    for name in ("model.safetensors", "state.pt"):
        assert meta["sha256"][name] == file_sha256(trained / "checkpoints" / "last" / name)


# --- a run is a run from its first second ------------------------------------------------------------------------


def test_a_run_killed_while_its_store_is_built_resumes(data, tmp_path):
    from fptplus._testing import CRASH_ENV

    run = tmp_path / "run"
    env = {**os.environ, CRASH_ENV: "preload-committed:2"}
    cmd = [sys.executable, "-m", "fptplus.cli", *train_args(data, run)]
    killed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode < 0 and not (run / "store" / "manifest.json").exists()
    assert (run / "config.yaml").exists() and (run / "run.json").exists()  # the records came first
    resumed = subprocess.run([sys.executable, "-m", "fptplus.cli", "train", "--resume", str(run)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "results.json").exists() and (run / "store" / "manifest.json").exists()
    again = tmp_path / "again"  # killed the same way, then the same command: it carries on (no flag needed)
    killed = subprocess.run([*cmd[:3], *train_args(data, again)], capture_output=True, text=True, env=env,
                            timeout=300)  # fmt: skip
    assert killed.returncode < 0
    same = subprocess.run([*cmd[:3], *train_args(data, again)], capture_output=True, text=True, timeout=300)
    assert same.returncode == 0, same.stderr[-2000:]
    assert "stopped before any seed trained; starting over" in same.stdout + same.stderr
    assert (again / "results.json").exists()


def test_a_moved_run_folder_still_finds_its_store(trained, tmp_path, monkeypatch, capsys):
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(trained, moved)
    assert json.loads((moved / "run.json").read_text())["store"] == "store"  # relative to the run folder
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "elsewhere/run", "--split", "val"]) == 0
    assert "on val: AUC" in capsys.readouterr().out


def test_resume_refuses_a_dataset_that_changed_under_the_run(tmp_path, capsys):
    data = class_folders(tmp_path / "data", {"neg": 8, "pos": 8}, size=(48, 48))
    run = tmp_path / "run"
    assert main(train_args(data, run, "--no-preload")) == 0
    (run / "results.json").unlink()
    (data / "pos" / "img3.png").rename(data / "neg" / "moved.png")  # relabelled
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no longer matches" in err and "splits.csv" in err


def test_a_run_whose_store_was_deleted_says_how_to_rebuild_it(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("store"))
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "feature store of run" in err and "is missing" in err and f"fptplus train --resume {run}" in err
    assert main(["train", "--resume", str(run)]) == 0  # rebuilds the store; the finished seed is kept
    assert "finished earlier" in capsys.readouterr().out and (run / "store" / "manifest.json").exists()
    assert main(["evaluate", str(run)]) == 0

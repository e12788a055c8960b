"""Where `predict --out` and `export --out` may write: never over a run's or a store's files, never over an existing
file without --overwrite, and a bad path is one line naming it."""

from __future__ import annotations

import pytest

from fptplus.cli import main
from runhelp import trained_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_tiny_run(tmp_path_factory.mktemp("out"))


def predict(run, out, *extra):
    return main(["predict", str(run), str(run.parent / "data" / "neg" / "img0.png"), "--out", str(out),
                 "--num-workers", "0", *extra])  # fmt: skip


@pytest.mark.parametrize("target", ["results.json", "checkpoints/last/model.safetensors", "new.csv",
                                    "store/manifest.json", "store/extra.csv"])  # fmt: skip
def test_never_inside_a_run_or_a_store(run, target, capsys):
    path = run / target
    before = path.read_bytes() if path.exists() else None
    for extra in ([], ["--overwrite"]):
        assert predict(run, path, *extra) == 2
        err = capsys.readouterr().err
        assert "is inside the run" in err or "is inside the feature store" in err
    assert (path.read_bytes() if path.exists() else None) == before


def test_existing_files_folders_and_files_as_folders(run, tmp_path, capsys):
    out = tmp_path / "p.csv"
    out.write_text("mine")
    assert predict(run, out) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_text() == "mine"
    assert predict(run, out, "--overwrite") == 0 and out.read_text().startswith("path,prediction")
    assert predict(run, tmp_path) == 2
    assert "is a folder; name a file in it" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert predict(run, tmp_path / "afile" / "p.csv") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert predict(run, tmp_path / "new" / "deeper" / "p.json") == 0  # a missing folder is created
    assert (tmp_path / "new" / "deeper" / "p.json").exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_evaluate_in_a_read_only_run_prints_the_metrics_then_one_line(run, tmp_path, capsys):
    import os
    import shutil
    import stat

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    copy = tmp_path / "ro"
    shutil.copytree(run, copy)
    for folder in [copy, *[p for p in copy.rglob("*") if p.is_dir()]]:
        folder.chmod(stat.S_IREAD | stat.S_IEXEC)
    try:
        assert main(["evaluate", str(copy)]) == 2
        out, err = capsys.readouterr()
        assert "on test: AUC" in out and "could not be written" in err and "Traceback" not in err
    finally:
        for folder in [copy, *[p for p in copy.rglob("*") if p.is_dir()]]:
            folder.chmod(stat.S_IRWXU)


def test_evaluate_when_the_run_cannot_be_written_prints_the_metrics_then_one_line(run, monkeypatch, capsys):
    from pathlib import Path

    real = Path.write_text

    def read_only(self, *a, **kw):
        if self.name.startswith("eval-"):
            raise PermissionError(13, "Permission denied")
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "write_text", read_only)
    assert main(["evaluate", str(run)]) == 2
    out, err = capsys.readouterr()
    assert "on test: AUC" in out and "could not be written" in err and "Permission denied" in err

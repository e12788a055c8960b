"""fptplus speaks through `logging`: silent as a library unless configured, -q/-v on the command line."""

from __future__ import annotations

import logging

from fptplus.cli import main
from fptplus.data.sources import load_index
from imagegen import class_folders
from storetools import build

from conftest import TINY


def test_the_library_prints_nothing_unless_logging_is_configured(tmp_path, capsys, caplog):
    index = load_index(class_folders(tmp_path / "data", {"neg": 4, "pos": 4}), seed=0)
    build(index, tmp_path / "store", log=None)  # no `log`: the fptplus.store logger
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    with caplog.at_level(logging.INFO, logger="fptplus"):
        build(index, tmp_path / "store", log=None)
    assert any("complete store already present" in r.message for r in caplog.records)


def test_quiet_and_verbose_on_the_command_line(tmp_path, capsys):
    data = class_folders(tmp_path / "data", {"neg": 8, "pos": 8}, size=(48, 48))
    args = ["train", "--data", str(data), "--weights", "none", "--epochs", "1", "--batch-size", "4", "--num-workers",
            "0", "--bootstrap", "0", "--img-size", "64", "--backbone-kwargs", repr(TINY), "--side-depth", "2",
            "--reduction", "2", "--num-prompts", "4"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "quiet"), "-q"]) == 0
    assert capsys.readouterr().out == ""  # quiet: nothing below a warning on the console ...
    log = (tmp_path / "quiet" / "log.txt").read_text()
    assert "best epoch 1" in log and "next:" in log  # ... while the run's log file keeps every line
    assert main([*args, "--out", str(tmp_path / "loud")]) == 0
    assert "best epoch 1" in capsys.readouterr().out
    assert logging.getLogger("fptplus").handlers == []  # the command line restores the configuration it found


def test_progress_lines_without_a_terminal_and_nothing_when_disabled(monkeypatch):
    from fptplus.logs import Progress

    lines: list[str] = []
    p = Progress(10, "epoch 1/2 step", lines.append, every=4, bar=False)
    for i in range(1, 11):
        p.update(i, f"loss {1 / i:.2f}")
    p.close()
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/2 step 4/10", "epoch 1/2 step 8/10",
                                                       "epoch 1/2 step 10/10"]  # fmt: skip
    assert lines[-1].endswith("ETA 0 s") and "loss 0.10" in lines[-1]
    silent: list[str] = []
    q = Progress(10, "x", silent.append, enabled=False, every=1, bar=True)  # disabled wins over a terminal
    for i in range(1, 11):
        q.update(i)
    assert silent == [] and q.bar is None
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    assert Progress(3, "x", silent.append).bar is None  # INFO does not reach a console here: no bar either

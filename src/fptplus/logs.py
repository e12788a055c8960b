"""fptplus talks through the standard `logging` module: every module logs to a child of the "fptplus" logger.

A library user silences, redirects or formats it like any other library (`logging.getLogger("fptplus")`); the
command line sends INFO lines to the console (`--quiet`: warnings only, `--verbose`: debug too); a training run
also writes its lines to RUN/log.txt (`log_file`). Progress bars follow the same level.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = logging.getLogger("fptplus")
_CLI_HANDLER = "fptplus-cli"


def get_logger(name: str) -> logging.Logger:
    """The logger of one fptplus module (`fptplus.<name>`)."""
    return logging.getLogger(f"fptplus.{name}")


def info_of(logger: logging.Logger, log: Callable[[str], None] | None = None) -> Callable[[str], None]:
    """The line writer a function uses: the caller's `log` when given, else its module logger at INFO."""
    return log if log is not None else logger.info


@contextmanager
def cli_output(level: int = logging.INFO) -> Iterator[None]:
    """Console output of one command line: plain lines to the current stdout at `level` while it runs; the
    logging configuration before it (e.g. an outer command's, or a library user's) is restored afterwards."""
    saved = (list(ROOT.handlers), ROOT.level, ROOT.propagate)
    for handler in [h for h in ROOT.handlers if h.get_name() == _CLI_HANDLER]:
        ROOT.removeHandler(handler)  # a nested command (e.g. `bench plan` running `train`) prints each line once
    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(_CLI_HANDLER)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(level)
    ROOT.addHandler(handler)
    ROOT.setLevel(level)
    ROOT.propagate = False
    try:
        yield
    finally:
        ROOT.removeHandler(handler)
        ROOT.handlers[:] = saved[0]
        ROOT.setLevel(saved[1])
        ROOT.propagate = saved[2]


def showing_info() -> bool:
    """Whether INFO lines reach the console (progress bars follow it)."""
    console = [h for h in ROOT.handlers if h.get_name() == _CLI_HANDLER]
    if console:
        return console[0].level <= logging.INFO
    return ROOT.isEnabledFor(logging.INFO)


@contextmanager
def log_file(path: Path | None, enabled: bool = True) -> Iterator[None]:
    """Also write every fptplus line (INFO and above) to `path` while the block runs (e.g. RUN/log.txt)."""
    if path is None or not enabled:
        yield
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.INFO)
    ROOT.addHandler(handler)
    previous = ROOT.level
    if ROOT.getEffectiveLevel() > logging.INFO:  # the file gets INFO even when the console is quiet
        ROOT.setLevel(logging.INFO)
    try:
        yield
    finally:
        ROOT.removeHandler(handler)
        handler.close()
        ROOT.setLevel(previous)


class Progress:
    """Progress of a long loop: a tqdm bar when INFO lines reach an interactive console, else plain lines through
    `log` (every `every` steps, or at most every `seconds`), nothing when `enabled` is False (quiet, other ranks).

    Lines read "DESC DONE/TOTAL[ UNIT]  TEXT  ETA S s".
    """

    def __init__(
        self,
        total: int,
        desc: str,
        log: Callable[[str], None],
        enabled: bool = True,
        every: int | None = None,
        seconds: float | None = None,
        bar: bool | None = None,
        unit: str = "",
    ) -> None:
        self.total, self.desc, self.log, self.enabled, self.unit = total, desc, log, enabled, unit
        self.every, self.seconds = every, seconds
        self.t0 = self.last = time.perf_counter()
        self.done, self.bar = 0, None
        if bar is None:
            bar = showing_info() and sys.stdout.isatty()
        if enabled and bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False)

    def update(self, done: int, text: str = "") -> None:
        """`done` steps of `total` are finished; `text` is the current state (loss, rate)."""
        if not self.enabled:
            return
        step, self.done = done - self.done, done
        if self.bar is not None:
            self.bar.update(step)
            self.bar.set_postfix_str(text)
            return
        now = time.perf_counter()
        due = done == self.total
        due |= self.every is not None and done % self.every == 0
        due |= self.seconds is not None and now - self.last >= self.seconds
        if due:
            eta = (now - self.t0) / max(done, 1) * (self.total - done)
            unit = f" {self.unit}" if self.unit else ""
            self.log(f"{self.desc} {done}/{self.total}{unit}  {text}  ETA {eta:.0f} s".replace("   ", "  "))
            self.last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

"""Shared helpers of the feature-store tests: one tiny-LPM weights file, a quiet preload, a folder's bytes."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from fptplus.store import PreloadOptions, PreloadReport, preload

from conftest import build_tiny, tiny_config


@functools.cache
def tiny_weights() -> Path:
    """A weights file for the tiny LPM, so preload and the tests build the very same frozen model."""
    from safetensors.torch import save_file

    folder = Path(tempfile.mkdtemp(prefix="fptplus-weights-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "tiny.safetensors"
    save_file(build_tiny(tiny_config()).lpm.vit.state_dict(), path)
    return path


def store_cfg(**kw):
    """The tiny FPT+ config (2 classes) with the shared weights file."""
    return tiny_config(num_classes=2, weights=str(tiny_weights()), **kw)


def quiet(*_) -> None:
    pass


def build(index, out, cfg=None, log=quiet, **options) -> PreloadReport:
    """Preloads `index` into `out` in this process (no decode workers, batch 3 unless given)."""
    opts = PreloadOptions(**{"num_workers": 0, "batch_size": 3, **options})
    return preload(index, cfg or store_cfg(), out, opts, rank=0, world_size=1, log=log)


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` with its bytes (stores are compared byte for byte)."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}

"""Checkpoints: trainable tensors as safetensors + a JSON description; training state for exact resume.

    checkpoints/<name>/model.safetensors   only the parameters that train (PETL methods: a few MB)
    checkpoints/<name>/meta.json           method, model config, classes, epoch, metric, tensor names/shapes
    checkpoints/last/state.pt              optimizer, scheduler, RNG states, epoch, step, best, history

A checkpoint is loaded only into a model of the same method, backbone, class count and trainable tensors;
anything else is refused with what differs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import FPTPlusError

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
STATE_FILE = "state.pt"


class CheckpointError(FPTPlusError):
    """A checkpoint that is missing, damaged, or belongs to another model."""


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that require grad, detached and contiguous, on the CPU."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any], state: dict[str, Any] | None = None) -> None:
    """Writes the checkpoint into a temp folder, then swaps it in (a kill never leaves half a checkpoint)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = trainable_state(model)
    save_file(tensors, tmp / MODEL_FILE)
    meta = {**meta, "tensors": {n: list(t.shape) for n, t in tensors.items()}}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def read_meta(path: Path) -> dict[str, Any]:
    meta_path = Path(path) / META_FILE
    if not meta_path.exists():
        raise CheckpointError(f"{path} is not a checkpoint (no {META_FILE})")
    return json.loads(meta_path.read_text())


def load_checkpoint(path: Path, model: nn.Module, expect: dict[str, Any]) -> dict[str, Any]:
    """Loads trainable tensors into `model` after checking the checkpoint was made for this kind of model.

    Args:
        path: checkpoint folder.
        model: the freshly built model.
        expect: {"method", "backbone", "num_classes", ...} the checkpoint's meta must equal.

    Returns:
        The checkpoint's meta.
    """
    meta = read_meta(path)
    problems = [f"{k}: checkpoint {meta.get(k)!r}, this run {v!r}" for k, v in expect.items() if meta.get(k) != v]
    want = {n: list(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    if not problems and meta.get("tensors") != want:
        missing = sorted(set(want) - set(meta.get("tensors", {})))
        extra = sorted(set(meta.get("tensors", {})) - set(want))
        shapes = [n for n in want if n in meta.get("tensors", {}) and meta["tensors"][n] != want[n]]
        problems.append(f"trainable tensors differ (missing {missing[:3]}, unexpected {extra[:3]}, shape {shapes[:3]})")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit this model: " + "; ".join(problems))
    try:
        tensors = load_file(Path(path) / MODEL_FILE)
    except Exception as err:
        raise CheckpointError(f"cannot read {Path(path) / MODEL_FILE}: {err}") from err
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
    return meta


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    _, keys, pos, *_ = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [*internal, version, gauss],
        "numpy": [*keys.tolist(), int(pos)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[-2], tuple(py[:-2]), py[-1]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np.array(np_state[:-1], dtype=np.uint32), np_state[-1], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read training state {Path(path) / STATE_FILE}: {err}") from err


def checkpoint_bytes(path: Path) -> int:
    return (Path(path) / MODEL_FILE).stat().st_size

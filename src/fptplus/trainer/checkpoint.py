"""Checkpoints: trainable tensors as safetensors + a JSON description; training state for exact resume.

    checkpoints/<name>/model.safetensors   only the parameters that train (PETL methods: a few MB), plus what a fitted
                                           model keeps besides parameters (the kNN probe's feature bank)
    checkpoints/<name>/meta.json           method, model config, classes, epoch, metric, tensor names/shapes
    checkpoints/last/state.pt              optimizer, scheduler, RNG states, epoch, step, best, history

A checkpoint is loaded only into a model of the same method, backbone, class count and trainable tensors;
anything else is refused with what differs. meta.json records the sha256 of model.safetensors and state.pt,
checked on every load: a flipped byte is refused, never evaluated (checkpoints are small, so this is cheap).
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

from ..errors import DivergedError, FPTPlusError
from ..files import display, read_json, read_json_schema
from ..weights import file_sha256

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
STATE_FILE = "state.pt"
FORMAT = 2  # 2: meta.json holds the files' sha256
META_SCHEMA = {"tensors": dict}
DAMAGED = "use the other checkpoint (--checkpoint best/last) or retrain"


class CheckpointError(FPTPlusError):
    """A checkpoint that is missing, damaged, or belongs to another model."""


def fitted_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Buffers a model fits from data rather than learns as parameters (`model.fitted_state()`, e.g. the kNN probe's
    bank; their shapes depend on the data, so they are not compared with a fresh model's), else {}."""
    fn = getattr(model, "fitted_state", None)
    return dict(fn()) if callable(fn) else {}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that require grad and fitted buffers, detached and contiguous, on the CPU."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return {n: t.cpu().contiguous() for n, t in {**params, **fitted_state(model)}.items()}


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any], state: dict[str, Any] | None = None) -> None:
    """Writes the checkpoint into a temp folder, then swaps it in (a kill never leaves half a checkpoint)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tensors = trainable_state(model)
    bad = [n for n, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise DivergedError(f"refusing to save checkpoint {display(path)}: {len(bad)} tensors hold NaN/inf (e.g. "
                            f"{bad[0]}); the model diverged: lower the learning rate")  # fmt: skip
    tmp.mkdir(parents=True)
    save_file(tensors, tmp / MODEL_FILE)
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    hashes = {name: file_sha256(tmp / name) for name in (MODEL_FILE, STATE_FILE) if (tmp / name).exists()}
    meta = {**meta, "tensors": {n: list(t.shape) for n, t in tensors.items()}, "format": FORMAT, "sha256": hashes}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def read_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's meta.json, checked (CheckpointError naming the file when missing or damaged)."""
    meta_path = Path(path) / META_FILE
    if not meta_path.exists():
        raise CheckpointError(f"{display(path)} is not a checkpoint (no {META_FILE})")
    meta = read_json_schema(meta_path, META_SCHEMA, CheckpointError, DAMAGED)
    if meta.get("format", 1) >= 2 and not isinstance(meta.get("sha256"), dict):
        raise CheckpointError(f"{display(meta_path)} is damaged: no file hashes; {DAMAGED}")
    return meta


def verify_file(path: Path, name: str, meta: dict[str, Any]) -> None:
    """Refuses a checkpoint file whose bytes differ from the sha256 recorded when it was saved."""
    want = meta.get("sha256", {}).get(name)
    if meta.get("format", 1) < 2:
        return  # written before checkpoints recorded hashes
    file = Path(path) / name
    if want is None or not file.exists():
        raise CheckpointError(f"{display(file)} is missing from its checkpoint; {DAMAGED}")
    if file_sha256(file) != want:
        raise CheckpointError(
            f"{display(file)} is damaged: its sha256 differs from the one recorded when it was saved (disk or copy "
            f"error); {DAMAGED}"
        )


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
    fitted = set(fitted_state(model))
    want |= {n: meta.get("tensors", {}).get(n) for n in fitted}  # any shape: a bank's size is the data's
    if not problems and meta.get("tensors") != want:
        missing = sorted(set(want) - set(meta.get("tensors", {})))
        extra = sorted(set(meta.get("tensors", {})) - set(want))
        shapes = [n for n in want if n in meta.get("tensors", {}) and meta["tensors"][n] != want[n]]
        problems.append(f"trainable tensors differ (missing {missing[:3]}, unexpected {extra[:3]}, shape {shapes[:3]})")
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit this model: " + "; ".join(problems))
    verify_file(path, MODEL_FILE, meta)
    try:
        tensors = load_file(Path(path) / MODEL_FILE)
    except Exception as err:
        raise CheckpointError(f"cannot read {Path(path) / MODEL_FILE}: {err}") from err
    params = dict(model.named_parameters())
    if set(tensors) != set(want) or any(list(tensors[n].shape) != want[n] for n in want):
        raise CheckpointError(
            f"{display(Path(path) / MODEL_FILE)} does not hold the tensors its meta.json lists; {DAMAGED}"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            if name not in fitted:
                params[name].copy_(value)
    if fitted:
        model.load_fitted_state({n: tensors[n] for n in fitted})
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
    """The training state saved with a `last` checkpoint (hash-checked)."""
    verify_file(path, STATE_FILE, read_meta(path))
    try:
        return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read training state {Path(path) / STATE_FILE}: {err}") from err


def checkpoint_bytes(path: Path) -> int:
    return (Path(path) / MODEL_FILE).stat().st_size


CALIBRATION_FILE = "calibration.json"  # in the seed's run folder, next to results.json; tied to the best checkpoint


def write_calibration(path: Path, report: dict[str, Any], best_meta: dict[str, Any]) -> None:
    """The validation-fitted temperature and threshold, with the hash of the checkpoint they were fitted for."""
    record = {"checkpoint": "best", "model_sha256": best_meta.get("sha256", {}).get(MODEL_FILE),
              "temperature": report["temperature"], "temperature_note": report.get("temperature_note"),
              "threshold": report.get("threshold"),
              "classes": best_meta.get("classes")}  # fmt: skip
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def read_calibration(run_dir: Path, checkpoint: str) -> dict[str, Any]:
    """The calibration of a run's best checkpoint, refused when it was fitted for other weights."""
    path = Path(run_dir) / CALIBRATION_FILE
    if checkpoint != "best":
        raise CheckpointError("calibration (temperature, threshold) is fitted for the best checkpoint; use it")
    if not path.exists():
        raise CheckpointError(
            f"{display(path)} does not exist: this run was trained before calibration was recorded, or has no "
            "validation/test split; retrain it (fptplus train --resume finishes an unfinished run)"
        )
    record = read_json(path, CheckpointError)
    meta = read_meta(Path(run_dir) / "checkpoints" / "best")
    if record.get("model_sha256") != meta.get("sha256", {}).get(MODEL_FILE):
        raise CheckpointError(
            f"{display(path)} was fitted for another best checkpoint than the one in {display(run_dir)}; retrain "
            "or re-run the final evaluation"
        )
    return record

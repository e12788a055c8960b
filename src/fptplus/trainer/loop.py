"""One training run: AdamW + per-step cosine schedule, evaluation each epoch, best-val-AUC selection, exact resume.

Everything random is a function of the run seed: model init, the per-epoch data order (its own generator),
the per-sample augmentation seeds, and the global RNG (dropout) whose state is checkpointed every epoch. A run
killed and resumed from its last checkpoint therefore ends with the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .._testing import crash_point
from ..calibration import clinical_report
from ..config import RunConfig
from ..data.sources import DataIndex
from ..errors import DivergedError
from ..files import human_bytes
from ..logs import Progress, get_logger, info_of, showing_info
from ..methods import get_method
from ..metrics import Metrics, compute_metrics
from ..store.reader import FeatureStore
from .callbacks import Callback, Callbacks, RunInfo
from .checkpoint import (
    CALIBRATION_FILE,
    checkpoint_bytes,
    load_checkpoint,
    load_state,
    read_meta,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_calibration,
)
from .inputs import Inputs, epoch_loader, eval_loader, make_inputs
from .objective import Objective, make_objective
from .outputs import RunPaths, write_history

_log = get_logger("train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int):
    """Linear warm-up to the peak lr, then cosine decay to 0, stepped once per optimizer step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def diverged(root: Path, seed: int, epoch: int, what: str, lr: float) -> DivergedError:
    """The error that stops a seed whose loss or scores stopped being finite, with the likely fix."""
    return DivergedError(
        f"run {root}, seed {seed}, epoch {epoch}: {what}. The model diverged; nothing from this epoch was kept. "
        f"Lower the learning rate (it is {lr:g}; try --lr {lr / 10:g}), or check the inputs for NaN/inf "
        "(`fptplus preload ... --verify` checks a feature store)"
    )


def selection_key(m: Metrics) -> tuple[str, float]:
    """Model selection: validation AUC, or (when AUC is undefined) the negative validation loss."""
    return ("val AUC", m.auc) if m.auc is not None else ("val loss", -m.loss)


@torch.no_grad()
def predict_probs(
    model: nn.Module, loader: DataLoader, accelerator, objective: Objective | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Probabilities, labels and the mean loss over a loader: softmax and cross-entropy, or (multi-label
    `objective`) sigmoids, (n, L) 0/1 labels and binary cross-entropy."""
    objective = objective or Objective()
    unweighted = Objective(objective.num_labels)  # the reported loss ignores class weights
    model.eval()
    core = accelerator.unwrap_model(model)
    if accelerator.num_processes > 1:  # each process takes a shard; gather_for_metrics drops the padding
        loader = accelerator.prepare_data_loader(loader)
    probs, labels, loss_sum, n = [], [], 0.0, 0
    for batch in loader:
        batch = to_device(batch, accelerator.device)
        args, kwargs = core.batch_args(batch)
        with accelerator.autocast():
            logits = model(*args, **kwargs).float()
        y = torch.as_tensor(batch["label"], device=logits.device)
        logits, y = accelerator.gather_for_metrics((logits, y))
        loss_sum += unweighted.loss(logits, y, reduction="sum").item()
        n += len(y)
        probs.append(objective.probs(logits).cpu().numpy())
        labels.append(objective.targets(y).cpu().numpy())
    if n == 0:
        return np.zeros((0, 0)), np.zeros(0, dtype=np.int64), float("nan")
    return np.concatenate(probs), np.concatenate(labels), loss_sum / n


@dataclass
class FitResult:
    results: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def build_optimizer(params: list[torch.nn.Parameter], tc: Any, lr: float) -> torch.optim.Optimizer:
    """The paper's optimiser: AdamW at `lr` with the run's weight decay and betas."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=tc.weight_decay, betas=tuple(tc.betas))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int):
    """The paper's schedule: linear warm-up, then cosine to 0, stepped once per optimizer step."""
    return cosine_schedule(optimizer, total_steps, warmup_steps)


@dataclass
class Training:
    """What one seed's steps need: the (prepared) model and its unwrapped core, the optimizer, scheduler and
    objective (each from the method's builder when it has one, else the paper's), the trainable parameters."""

    model: nn.Module
    core: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    objective: Objective
    trainable: list[torch.nn.Parameter]
    accelerator: Any
    lr: float


def make_training(method, model, cfg: RunConfig, index: DataIndex, train_ids: list[int], steps_per_epoch: int,
                  accelerator) -> Training:  # fmt: skip
    """The optimiser, scheduler and loss of a run: a method overrides any of them with `Method.optimizer`,
    `Method.scheduler` or `Method.objective` (same signatures as `build_optimizer`, `build_scheduler`,
    `objective.make_objective`)."""
    tc = cfg.train
    trainable = [p for p in model.parameters() if p.requires_grad]
    lr = tc.lr if tc.lr is not None else method.default_lr
    optimizer = (method.optimizer or build_optimizer)(trainable, tc, lr)
    scheduler = (method.scheduler or build_scheduler)(optimizer, steps_per_epoch * tc.epochs,
                                                      round(tc.warmup_epochs * steps_per_epoch))  # fmt: skip
    train_labels = [index.samples[i].label for i in train_ids]
    objective = (method.objective or make_objective)(tc.class_weights, train_labels, cfg.model.num_classes,
                                                     index.multilabel)  # fmt: skip
    model, optimizer = accelerator.prepare(model, optimizer)
    return Training(model, accelerator.unwrap_model(model), optimizer, scheduler, objective, trainable, accelerator,
                    lr)  # fmt: skip


def train_epoch(t: Training, method, loader, tc, root: Path, epoch: int, step: int, events, run, bar) -> tuple:
    """One epoch of optimizer steps; returns (mean training loss, the step count after it)."""
    loss_sum, seen = 0.0, 0
    for i, batch in enumerate(loader):
        batch = to_device(batch, t.accelerator.device)
        y = torch.as_tensor(batch["label"], device=t.accelerator.device)
        with t.accelerator.accumulate(t.model):
            args, kwargs = t.core.batch_args(batch)
            with t.accelerator.autocast():
                logits = t.model(*args, **kwargs)
            loss = t.objective.loss(logits.float(), y)
            if not torch.isfinite(loss):
                raise diverged(root, tc.seed, epoch + 1, f"the training loss is {loss.item()} at step {step + 1}",
                               t.lr)  # fmt: skip
            t.accelerator.backward(loss)
            if t.accelerator.sync_gradients:
                if tc.grad_clip is not None:
                    t.accelerator.clip_grad_norm_(t.trainable, tc.grad_clip)
                t.optimizer.step()
                t.scheduler.step()
                method.step_done(t.core, step)
                step += 1
                crash_point("train-step", step)
            t.optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.item() * len(y)
        seen += len(y)
        events.on_step(run, step, loss.item(), t.scheduler.get_last_lr()[0])
        bar.update(i + 1, f"loss {loss_sum / seen:.4f} lr {t.scheduler.get_last_lr()[0]:.2e}")
    return loss_sum / max(seen, 1), step


def fit(
    cfg: RunConfig,
    root: Path,
    index: DataIndex,
    store: FeatureStore | None,
    usable: list[int],
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    callbacks: Callback | None = None,
) -> FitResult:
    """Trains one seed of `cfg` into `root` (or resumes it), then evaluates the best checkpoint on val and test.

    Args:
        cfg, root, index, store, usable: the run's config, folder, dataset, feature store (or None) and usable samples.
        resume: continue from RUN/checkpoints/last.
        log: where progress lines go (default: the `fptplus.train` logger).
        callbacks: receivers of the trainer's events (plots, TensorBoard, ...; see `callbacks`).
    """
    from accelerate import Accelerator

    paths = RunPaths(root)
    tc = cfg.train
    method = get_method(cfg.method)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=tc.mixed_precision,
        gradient_accumulation_steps=tc.grad_accum,
    )
    log = info_of(_log, log) if accelerator.is_main_process else (lambda line: None)
    events = Callbacks([callbacks] if callbacks is not None else [], enabled=accelerator.is_main_process)
    n_train = sum(index.samples[i].split == "train" for i in usable)
    per_process = math.ceil(n_train / accelerator.num_processes)
    steps_per_epoch = math.ceil(math.ceil(per_process / tc.batch_size) / tc.grad_accum)
    model_cfg = method.plan_training(cfg.model, steps_per_epoch * tc.epochs)  # e.g. AdaLoRA's budget schedule
    seed_everything(tc.seed)
    model = method.build(model_cfg, source="store" if store is not None else "online")
    inputs: Inputs = make_inputs(method, model, model_cfg, index, store, usable, tc.seed, cfg.data.geometry)
    t = make_training(method, model, cfg, index, inputs.train.indices, steps_per_epoch, accelerator)
    model, core, optimizer, scheduler = t.model, t.core, t.optimizer, t.scheduler
    meta = {"method": cfg.method, "backbone": cfg.model.backbone, "num_classes": cfg.model.num_classes,
            "classes": list(index.classes)}  # fmt: skip
    params = core.param_count()

    start_epoch, step, best, history = 0, 0, None, []
    if resume and (paths.last / "state.pt").exists():
        load_checkpoint(paths.last, core, meta)
        state = load_state(paths.last)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start_epoch, step, history = state["epoch"] + 1, state["step"], state["history"]
        best = tuple(state["best"]) if state["best"] is not None else None
        log(f"resumed {root} after epoch {start_epoch} (step {step})")
    source = "training from the feature store" if inputs.source == "store" else "training online (from images)"
    log(f"{cfg.method}: {params}; {source}; {len(inputs.train)} train / "
        f"{len(inputs.val)} val / {len(inputs.test)} test images; lr {t.lr:g}, {tc.epochs} epochs")  # fmt: skip

    run = RunInfo(root, cfg, list(index.classes), params)
    events.on_fit_start(run)
    eval_bs = tc.eval_batch_size or 2 * tc.batch_size
    val_loader = eval_loader(inputs.val, eval_bs, tc.num_workers)
    for epoch in range(start_epoch, tc.epochs):
        t0 = time.perf_counter()
        model.train()
        loader = epoch_loader(inputs.train, tc.batch_size, tc.num_workers, tc.seed, epoch)
        if accelerator.num_processes > 1:
            loader = accelerator.prepare_data_loader(loader)
        bar = Progress(len(loader), f"epoch {epoch + 1}/{tc.epochs} step", log,
                       accelerator.is_main_process and showing_info(), every=tc.log_every)  # fmt: skip
        train_loss, step = train_epoch(t, method, loader, tc, root, epoch, step, events, run, bar)
        bar.close()
        train_seconds = time.perf_counter() - t0
        probs, labels, val_loss = predict_probs(model, val_loader, accelerator, t.objective)
        try:
            val = compute_metrics(labels, probs, val_loss, ordinal=cfg.data.ordinal)
        except DivergedError as err:
            raise diverged(root, tc.seed, epoch + 1, f"on validation, {err}", t.lr) from None
        key = selection_key(val)
        improved = best is None or key[1] > best[1]
        if improved:
            best = (key[0], key[1], epoch)
        row = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": train_loss,
            "lr": scheduler.get_last_lr()[0],
            "epoch_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - t0 - train_seconds,
            **{f"val_{k}": v for k, v in val.to_dict().items() if k != "confusion"},
        }
        history.append(row)
        log(f"epoch {epoch + 1}/{tc.epochs}  train loss {row['train_loss']:.4f}  {train_seconds:.1f} s  |  val "
            f"{val.summary()}{'  *best*' if improved else ''}")  # fmt: skip
        if val.auc_note and epoch == start_epoch:
            log(f"note: {val.auc_note}; model selection uses the validation loss instead")
        events.on_epoch_end(run, row)
        if accelerator.is_main_process:
            ckpt_meta = {**meta, "epoch": epoch + 1, "selection": key[0], "score": key[1]}
            if improved:
                save_checkpoint(paths.best, core, ckpt_meta)
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                     "epoch": epoch, "step": step, "best": list(best), "history": history}  # fmt: skip
            save_checkpoint(paths.last, core, ckpt_meta, state)
            write_history(root, history)
        accelerator.wait_for_everyone()
    results = _final_report(cfg, paths, core, model, inputs, accelerator, meta, best, history, params, log, events, run,
                            t.objective)  # fmt: skip
    events.on_fit_end(run, results)
    return FitResult(results, history)


def write_split_predictions(path: Path, ds, labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> None:
    """One row per evaluated sample: its path (when known), true class and the class probabilities."""
    from .outputs import write_prediction_rows

    known = len(ds) == len(labels)  # DDP padding would break the order
    names = [ds.sample_name(j) for j in range(len(ds))] if known else [""] * len(labels)
    write_prediction_rows(path, names, labels, probs, classes)


def _final_report(cfg, paths, core, model, inputs, accelerator, meta, best, history, params, log, events,
                  run, objective) -> dict[str, Any]:  # fmt: skip
    tc = cfg.train
    load_checkpoint(paths.best, core, meta)
    eval_bs = tc.eval_batch_size or 2 * tc.batch_size
    out, split_probs = {}, {}
    for split, ds in (("val", inputs.val), ("test", inputs.test)):
        probs, labels, loss = predict_probs(model, eval_loader(ds, eval_bs, tc.num_workers), accelerator, objective)
        split_probs[split] = labels, probs
        m = compute_metrics(labels, probs, loss, ci=split == "test" and tc.bootstrap > 0, ci_samples=tc.bootstrap,
                            seed=tc.seed, ordinal=cfg.data.ordinal)  # fmt: skip
        out[split] = m.to_dict()
        log(f"best epoch {best[2] + 1} ({best[0]}) on {split}: {m.summary()}")
        if len(labels):
            events.on_evaluated(run, split, labels, probs, history)
        if accelerator.is_main_process and len(labels):
            write_split_predictions(paths.root / f"predictions_{split}.csv", ds, labels, probs, meta["classes"])
    results = {
        "method": cfg.method,
        "seed": tc.seed,
        "source": inputs.source,
        "classes": meta["classes"],
        "best_epoch": best[2] + 1,
        "selection": best[0],
        "params": {"trainable": params.trainable, "total": params.total, "percent": params.percent},
        "checkpoint_bytes": checkpoint_bytes(paths.best),
        "epoch_seconds": float(np.mean([h["epoch_seconds"] for h in history])),
        "val": out["val"],
        "test": out["test"],
        "calibration": calibration_report(split_probs, tc, log) if not objective.multilabel else None,
        **memory_report(cfg, inputs.source),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    if accelerator.is_main_process:
        paths.results.write_text(json.dumps(results, indent=1))
        if results["calibration"] is not None:
            write_calibration(paths.root / CALIBRATION_FILE, results["calibration"], read_meta(paths.best))
        log(f"checkpoint {paths.best / 'model.safetensors'}: {human_bytes(results['checkpoint_bytes'])} "
            f"(trainable tensors only); results in {paths.results}")  # fmt: skip
    return results


def calibration_report(split_probs: dict, tc, log) -> dict[str, Any] | None:
    """ECE before/after a validation-fitted temperature and (binary) operating points; None without val/test."""
    (vl, vp), (tl, tp) = split_probs["val"], split_probs["test"]
    if not (len(vl) and len(tl)):
        return None
    report = clinical_report(vl, vp, tl, tp, tc.threshold, ci_samples=tc.bootstrap, seed=tc.seed)
    ece, scaled = report["ece"]["test"], report["ece_temperature_scaled"]["test"]
    vece, vscaled = report["ece"]["val"], report["ece_temperature_scaled"]["val"]
    if report["temperature"] == 1.0:
        line = f"calibration: test ECE {100 * ece:.2f} %; temperature {report['temperature_note']}"
    else:
        line = (f"calibration: T = {report['temperature']:.3f} ({report['temperature_note']}): ECE val "
                f"{100 * vece:.2f} -> {100 * vscaled:.2f} %, test {100 * ece:.2f} -> {100 * scaled:.2f} %")  # fmt: skip
        if scaled > ece:
            line += " — WORSE on test: do not use predict --calibrated for this run"
    if "threshold" in report:
        t = report["threshold"]
        line += (f"; threshold {t['value']:.4f} ({t['rule']}, on val): test sensitivity "
                 f"{100 * t['test_sensitivity']:.1f} %, specificity {100 * t['test_specificity']:.1f} %")  # fmt: skip
    log(line)
    return report


def memory_report(cfg: RunConfig, source: str) -> dict[str, float | None]:
    """The two memory numbers a run reports, named apart:

    train_step_mb        one steady-state training step's tensors (weights, gradients, optimizer state,
                         activations) at the run's batch size with fused attention, counted exactly on the meta
                         device (`step_memory.measure_step`): what the README's and benchmarks' tables compare
    process_peak_rss_mb  this process's peak resident memory (Python, libraries, the preload, the data loaders)
    cuda_peak_mb         the CUDA allocator's peak, on a GPU
    """
    import resource

    from .step_memory import measure_step

    try:
        step = measure_step(cfg.method, cfg.model, cfg.train.batch_size, "meta", "fused", source).breakdown.peak
        step_mb = step / 2**20
    except Exception:
        step_mb = None
    out = {"train_step_mb": step_mb, "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out

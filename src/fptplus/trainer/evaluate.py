"""`fptplus evaluate` and `fptplus predict`: a trained run folder applied to a split or to new images."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..calibration import apply_temperature
from ..config import RunConfig
from ..data.checks import RENAME_HINT, bad_names
from ..data.decode import IMAGE_EXTENSIONS, DecodeError, load_image_file, undecodable_error
from ..data.sources import SPLITS, DataIndex
from ..errors import ConfigError, RunError
from ..files import display
from ..logs import get_logger, info_of
from ..methods import get_method
from ..metrics import compute_metrics
from ..store import FeatureStore
from .callbacks import Callback, RunInfo
from .checkpoint import load_checkpoint, read_calibration, read_meta
from .inputs import eval_loader, make_inputs, view_config
from .loop import predict_probs
from .objective import Objective
from .runfolder import check_split_record, read_classes, read_run_info, record_files, store_location

_log = get_logger("evaluate")


def resolve_run(run: str | Path, seed: int | None = None) -> tuple[Path, Path]:
    """(run root, seed folder) of a run path (either may be given)."""
    path = Path(run)
    if (path / "checkpoints").exists() and (path / "config.yaml").exists():
        root = path if (path / "run.json").exists() else path.parent
        return root, path
    if not (path / "run.json").exists():
        raise RunError(f"{path} is not a run folder (no run.json / checkpoints); pass the --out of `fptplus train`")
    from .folds import fold_count

    folds = fold_count(path)
    if folds:
        raise RunError(f"{path} is a {folds}-fold cross-validation: pass one fold's run, {path / 'fold-0'} .. "
                       f"{path / f'fold-{folds - 1}'} (its summary is {path / 'summary.md'})")  # fmt: skip
    seeds = read_run_info(path)["seeds"]
    if seed is None:
        seed = seeds[0]
    if seed not in seeds:
        raise ConfigError(f"{path} has seeds {seeds}, not {seed}")
    return path, path if len(seeds) == 1 else path / f"seed-{seed}"


def run_index(root: Path, cfg: RunConfig) -> DataIndex:
    """The run's dataset rebuilt from its config, refused if it no longer matches the run's splits.csv."""
    index = cfg.data.load_index()
    check_split_record(root, index, cfg.data.data)
    return index


def load_trained(run_dir: Path, checkpoint: str, source: str = "online"):
    """Rebuilds the model of a run folder and loads one of its checkpoints (refusing a mismatch).

    source: "online" (the model reads images: FPT attaches its frozen model) or "store" (stored features).
    """
    cfg = RunConfig.load(run_dir / "config.yaml")
    ckpt = run_dir / "checkpoints" / checkpoint
    if not ckpt.exists():
        raise ConfigError(f"{ckpt} does not exist (checkpoints: best, last); has this run trained an epoch yet?")
    model = get_method(cfg.method).build(cfg.model, source=source)
    classes = read_meta(ckpt).get("classes")
    meta = {"method": cfg.method, "backbone": cfg.model.backbone, "num_classes": cfg.model.num_classes}
    load_checkpoint(ckpt, model, meta)
    return cfg, model.eval(), classes


def evaluate_run(
    run: str | Path,
    split: str = "test",
    checkpoint: str = "best",
    seed: int | None = None,
    log: Callable | None = None,
    callbacks: Callback | None = None,
) -> dict[str, Any]:
    """Metrics of a trained run on one split (the run's own split file), written to eval-SPLIT-CHECKPOINT.json.

    `callbacks` receive `on_evaluated` with the labels and probabilities (the workflow's plots draw the ROC and
    confusion matrix from them).
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    root, run_dir = resolve_run(run, seed)
    cfg = RunConfig.load(run_dir / "config.yaml")
    index = run_index(root, cfg)
    store = open_run_store(root, cfg, index)
    _, model, _ = load_trained(run_dir, checkpoint, "store" if store is not None else "online")
    usable = store.usable() if store is not None else list(range(len(index.samples)))
    inputs = make_inputs(get_method(cfg.method), model, cfg.model, index, store, usable, cfg.train.seed,
                         cfg.data.geometry)  # fmt: skip
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model = accelerator.prepare(model)
    dataset = getattr(inputs, split)
    objective = Objective(len(index.classes) if index.multilabel else None)
    probs, labels, loss = predict_probs(model, eval_loader(dataset, 2 * cfg.train.batch_size, 0), accelerator,
                                        objective)  # fmt: skip
    metrics = compute_metrics(
        labels, probs, loss, ci=split == "test", ci_samples=cfg.train.bootstrap, seed=0, ordinal=cfg.data.ordinal
    )
    out = {"run": str(run_dir), "split": split, "checkpoint": checkpoint, **metrics.to_dict()}
    info_of(_log, log)(f"{run_dir} [{checkpoint}] on {split}: {metrics.summary()}")  # said first: a write may fail
    target = run_dir / f"eval-{split}-{checkpoint}.json"
    try:
        target.write_text(json.dumps(out, indent=1))
        if len(labels) and callbacks is not None:
            callbacks.on_evaluated(RunInfo(run_dir, cfg, read_classes(root)), f"{split}-{checkpoint}", labels, probs,
                                   [])  # fmt: skip
        record_files(run_dir)  # what evaluate wrote is the run's (a later --overwrite removes it)
    except OSError as err:
        raise RunError(f"the metrics above were computed, but {target.name} and its plots could not be written into "
                       f"{run_dir} ({err.strerror or err}: a read-only folder?); copy the run somewhere writable to "
                       "keep them") from None  # fmt: skip
    return out


def open_run_store(root: Path, cfg: RunConfig, index: DataIndex) -> FeatureStore | None:
    """The feature store a run trained from (checked against the run's model and data), or None (online)."""
    location = store_location(read_run_info(root), root)
    if location is None:
        return None
    if not location.exists():
        raise RunError(
            f"the feature store of run {display(root)} is missing: {display(location)} (moved or deleted?). Restore "
            f"it, or rebuild it with `fptplus train --resume {display(root)}` (finished seeds are kept)"
        )
    store = FeatureStore(location)
    get_method(cfg.method).inputs.check_store(store, cfg.model, index, cfg.data.geometry)
    return store


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for images (sorted); names must be UTF-8."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        elif p.exists():
            found.append(p)
        else:
            raise ConfigError(f"{p} does not exist")
    if not found:
        raise ConfigError(f"no images found in {[display(p) for p in paths]}")
    bad = bad_names(str(f) for f in found)
    if bad:
        shown = ", ".join(bad[:5])
        raise ConfigError(
            f"image names that are not valid UTF-8 ({len(bad)}), e.g. {shown}: predictions name every file in a "
            f"CSV/JSON record; {RENAME_HINT}"
        )
    return found


@dataclass
class Predictions:
    """rows: one dict per image (path, prediction, prob_<class>...); skipped: {path, error} of undecodable files."""

    rows: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)


class _PredictFiles(torch.utils.data.Dataset):
    """Decodes one file into the model's eval inputs, or an error (runs in the DataLoader's workers)."""

    def __init__(self, files: list[Path], views, inputs, max_pixels: int | None) -> None:
        self.files, self.views, self.inputs, self.max_pixels = files, views, inputs, max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            hr = self.views.high_res(load_image_file(self.files[i], self.max_pixels).image)
        except DecodeError as err:
            return {"path": str(self.files[i]), "error": str(err)}
        return {"path": str(self.files[i]), "item": self.inputs.eval_item(self.views, hr)}


@torch.no_grad()
def predict(
    run: str | Path,
    images: Sequence[str | Path],
    checkpoint: str = "best",
    seed: int | None = None,
    batch_size: int = 8,
    skip_bad: bool = False,
    num_workers: int = 2,
    calibrated: bool = False,
    decision: str = "argmax",
    engine: str = "torch",
    log: Callable[[str], None] | None = None,
) -> Predictions:
    """Class probabilities for new images of any size/format the data layer reads (LPM run online).

    Multi-label runs: one sigmoid probability per label, and `prediction` lists the labels at >= 0.5 (';').

    `num_workers` processes decode and resize the next batches while the model runs on the current one (0:
    decode in this process). Undecodable images raise one error listing all of them, or with `skip_bad` are
    returned in `skipped`. Rows keep the order of `images`.

    `engine`: what runs an FPT/FPT+ model's frozen pass ("torch", "onnxruntime" or "auto": `fptplus.engines`; the
    first batch's logits are compared with PyTorch's and the engine is refused above 1e-4).
    `calibrated`: probabilities divided in the logit domain by the validation-fitted temperature of the run's
    best checkpoint (its calibration.json). `decision`: "argmax" (the most probable class) or "threshold"
    (binary tasks: the positive class when its probability reaches the threshold chosen on validation; each
    row then carries the threshold).
    """
    if decision not in ("argmax", "threshold"):
        raise ConfigError(f"decision must be 'argmax' or 'threshold', got {decision!r}")
    _, run_dir = resolve_run(run, seed)
    files = collect_images(images)  # names checked before the model is built
    if batch_size < 1 or num_workers < 0:
        raise ConfigError(f"predict needs batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
    cfg, model, classes = load_trained(run_dir, checkpoint, "online")
    multilabel = bool(cfg.data.label_columns)
    if multilabel and (calibrated or decision != "argmax"):
        raise ConfigError(f"{run_dir} is multi-label: --calibrated and --decision threshold are for one class per "
                          "image (each label is present when its probability reaches 0.5)")  # fmt: skip
    calibration = read_calibration(run_dir, checkpoint) if calibrated or decision == "threshold" else None
    note = (calibration or {}).get("temperature_note") or ""
    if calibrated and note.startswith("not"):
        raise ConfigError(f"{run_dir}: --calibrated would change nothing: its temperature was {note}")
    threshold = None
    if decision == "threshold":
        if not (calibration and calibration.get("threshold")):
            raise ConfigError(f"{run_dir}: no decision threshold (binary tasks only; see its calibration.json)")
        threshold = float(calibration["threshold"]["value"])  # on the uncalibrated positive probability
    from ..data.views import Views

    method = get_method(cfg.method)
    views = Views(view_config(method, cfg.model, model.spec, None, cfg.data.geometry))
    dataset = _PredictFiles(files, views, method.inputs, cfg.data.max_image_pixels or None)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=min(num_workers, len(files)), collate_fn=list
    )
    rows, bad = [], []
    run_engine = _predict_engine(engine, method, cfg, model, info_of(_log, log))
    for batch in loader:
        bad += [b for b in batch if "error" in b]
        good = [b for b in batch if "item" in b]
        if not good:
            continue
        items = [b["item"] for b in good]
        stacked = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        if run_engine is not None:  # the frozen pass in the engine, the rest in PyTorch
            run_engine = _checked(run_engine, model, stacked, engine == "auto", info_of(_log, log))
        if run_engine is not None:
            logits = model(stacked["side"], features=run_engine(stacked["lpm"])).float()
        else:
            args, kwargs = model.batch_args(stacked)
            logits = model(*args, **kwargs).float()
        raw = (logits.sigmoid() if multilabel else logits.softmax(-1)).double().numpy()  # (B, C)
        shown = apply_temperature(raw, calibration["temperature"]) if calibrated else raw
        for b, p, r in zip(good, shown, raw, strict=True):
            if multilabel:  # every label at >= 0.5, joined by ';' (empty: none)
                label = ";".join(c for c, v in zip(classes, p, strict=True) if v >= 0.5)
            elif threshold is not None:
                label = classes[int(r[1] >= threshold)]
            else:
                label = classes[int(np.argmax(p))]
            row = {"path": b["path"], "prediction": label, **{f"prob_{c}": float(v) for c, v in zip(classes, p,
                   strict=True)}}  # fmt: skip
            if threshold is not None:
                row["threshold"] = threshold
            rows.append(row)
    if bad and not skip_bad:
        raise undecodable_error([b["error"] for b in bad], len(files), "the --out file's .skipped.csv")
    return Predictions(rows, bad)


PREDICT_TOLERANCE = 1e-4  # largest |logit difference| between an engine and PyTorch on the first batch


def _predict_engine(name: str, method, cfg, model, log):
    """An engine for an FPT/FPT+ model's frozen pass, or None (PyTorch inside the model; every other method)."""
    if name == "torch" or not method.fuses_lpm(cfg.model) or getattr(model, "lpm", None) is None:
        return None
    from ..backbones import weights_identity
    from ..engines import TorchEngine, make_engine

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    weights = weights_identity(cfg.model.backbone, cfg.model.weights)
    engine = make_engine(name, model.lpm, device, weights, cfg.model.backbone_kwargs, log)
    return None if isinstance(engine, TorchEngine) else engine


def _checked(engine, model, stacked: dict, auto: bool, log):
    """The first batch through both paths: the engine stays only if its logits are PyTorch's (≤ 1e-4)."""
    if getattr(engine, "predict_checked", False):
        return engine
    want = model(stacked["side"], lpm_x=stacked["lpm"]).float()
    got = model(stacked["side"], features=engine(stacked["lpm"])).float()
    diff = float((want - got).abs().max())
    if diff <= PREDICT_TOLERANCE:
        engine.predict_checked = True
        log(f"engine: {engine.name} for the frozen pass (logits within {diff:.1e} of PyTorch's on the first batch)")
        return engine
    if not auto:
        raise ConfigError(f"--engine {engine.name}: logits differ from PyTorch's by {diff:.2e} "
                          f"(> {PREDICT_TOLERANCE:g}) on the first batch; use --engine torch")  # fmt: skip
    log(f"engine: torch ({engine.name}'s logits differ by {diff:.2e} on the first batch)")
    return None


def skipped_path(out: str | Path) -> Path:
    """Where `predict --out OUT --skip-bad` lists the images it left out: OUT's name + .skipped.csv."""
    out = Path(out)
    return out.with_name(f"{out.stem}.skipped.csv")


def write_skipped(skipped: list[dict[str, str]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["path", "error"])
        w.writeheader()
        w.writerows(skipped)


def write_predictions(rows: list[dict[str, Any]], out: str | Path) -> None:
    out = Path(out)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(rows, indent=1), encoding="utf-8")
        return
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)

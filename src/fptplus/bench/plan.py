"""Benchmark plans: which methods to train on which dataset, at which resolutions, learning rates, epochs and seeds.

A plan is a YAML file (see `benchmarks/plans/`):

    name: isic-uda1                          # run folders go to runs/<name>, tables to benchmarks/<name>/results
    data: ../../data/isic-uda1/labels.csv    # paths are relative to the plan file
    weights: ../../../shared/weights/dinov2_vits14.safetensors
    backbone: vit_small_patch14_dinov2
    pair: [No_findings, Pneumonia]           # optional: a one-vs-one AUC column for two of the classes
    defaults: {workers: 1, batch_size: 16}   # optional
    rows:
      - {name: fpt_plus, method: fpt_plus, img_size: [224, 448], lr: [2e-3, 1e-3], epochs: 20, seeds: [0, 1, 2]}
      - {name: linear, method: linear, img_size: [224, 448], epochs: 1, seeds: [0, 1, 2], features: fpt_plus}
      - {name: lora, method: lora, img_size: 224, epochs: 3, seeds: [0], model: {lora_r: 8}}
      - {name: bf16, method: bitfit, img_size: 448, epochs: 3, train: {mixed_precision: bf16}, data: {resize: pad}}
    memory: {backbones: [vit_small_patch14_dinov2, vit_base_patch16_224], img_sizes: [224, 448], batch_size: 16}
                                             # optional `overrides: {side_depth: 2}`: model fields for every method
    compare: [[fpt_plus@448, fpt_plus@224], [fpt_plus@224, bitfit@32]]
                                             # optional: paired bootstrap of A − B test AUC (`fptplus compare`)

Every row expands to one run per (resolution, learning rate); when a row lists several learning rates, the one
with the best mean validation AUC is kept per (row, resolution) and the others are shown in parentheses.
`features: ROW` fits a probe (`linear`, `knn`) on the pooled features stored by ROW's feature store at the same
resolution (no second pass over the images; probes fit in closed form, their `epochs` is not used). FPT/FPT+ runs
of one method and resolution share one feature store (store-<method>-<size>); a row whose settings change what is
stored (e.g. side_img_size, token_ratio) names its own with `store: NAME` (a store made for other settings is
refused, never reused). `compare` names pairs of `ROW@SIZE` (the run validation kept for that row and resolution)
whose test-AUC difference is bootstrapped.

`cv_folds: K` selects a row's learning rate by cross-validation instead of by the validation split (which on
tens of images is noise): every learning rate first trains K patient-grouped folds of train + val (its first
seed, `train --folds K`, in RUNS/cv/<folder>, reading the row's feature store), the one with the best mean fold
validation AUC is trained on the standard split with every seed, and the others are not trained further.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..files import display, load_yaml
from ..methods import get_method

ROW_KEYS = {
    "name",
    "method",
    "img_size",
    "lr",
    "epochs",
    "seeds",
    "model",
    "train",
    "data",
    "features",
    "store",
    "note",
    "cv_folds",
}
PLAN_KEYS = {
    "name", "data", "weights", "backbone", "backbone_kwargs", "pair", "defaults", "rows", "memory", "compare", "note",
}  # fmt: skip


@dataclass
class Run:
    """One run folder: a row at one resolution and learning rate.

    `model`, `train` and `data` are fields of the method's model config, `TrainConfig` and `DataConfig` (checked
    by type when the run is built), on top of the plan's backbone, weights, data and defaults.
    """

    name: str
    method: str
    img_size: int
    lr: float | None
    epochs: int
    seeds: tuple[int, ...]
    model: dict[str, Any] = field(default_factory=dict)
    features: str | None = None  # a probe on the pooled features of this row's store
    lr_grid: bool = False  # the row searched several learning rates (the folder names the lr)
    store: str | None = None  # the feature store's folder name (default store-<method>-<size>)
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    cv_folds: int = 0  # > 0: the row's learning rate is chosen by K-fold cross-validation of train + val

    @property
    def folder(self) -> str:
        lr = f"-lr{self.lr:g}" if self.lr_grid and self.lr is not None else ""
        return f"{self.name}-{self.img_size}{lr}"

    @property
    def group(self) -> tuple[str, int]:
        """Runs of one group differ only in their learning rate; validation picks one."""
        return self.name, self.img_size


@dataclass
class MemorySpec:
    backbones: list[str] = field(default_factory=list)
    img_sizes: list[int] = field(default_factory=list)
    batch_size: int = 16
    overrides: dict[str, Any] = field(default_factory=dict)  # model fields for every method that has them


@dataclass
class Plan:
    name: str
    data: Path
    weights: Path | str
    backbone: str
    runs: list[Run]
    pair: tuple[str, str] | None = None
    workers: int = 1
    batch_size: int = 16
    memory: MemorySpec = field(default_factory=MemorySpec)
    path: Path | None = None
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. a tiny ViT in tests
    compare: list[tuple[tuple[str, int], tuple[str, int]]] = field(default_factory=list)  # (row, size) pairs A, B

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """Reads and checks a plan file (ConfigError naming the file and the entry on any problem)."""
        path = Path(path)
        try:
            raw = load_yaml(path.read_text(encoding="utf-8"), f"plan {display(path)}", ConfigError)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read plan {display(path)}: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"plan {display(path)}: expected a mapping with name, data, weights, backbone, rows")
        try:
            return cls.from_dict(raw, path.parent, path)
        except ConfigError as err:
            raise ConfigError(f"plan {display(path)}: {err}") from None

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: Path, path: Path | None = None) -> Plan:
        unknown = set(raw) - PLAN_KEYS
        missing = {"name", "data", "weights", "backbone", "rows"} - set(raw)
        if unknown or missing:
            raise ConfigError(f"unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        defaults = raw.get("defaults") or {}
        runs = [run for i, row in enumerate(raw["rows"]) for run in _expand(row, i)]
        names = [r.folder for r in runs]
        if len(set(names)) != len(names):
            raise ConfigError(f"two runs share a folder name: {sorted({n for n in names if names.count(n) > 1})}")
        for r in runs:
            if r.features and not any(o.name == r.features and o.img_size == r.img_size for o in runs):
                raise ConfigError(
                    f"row {r.name!r} reads the store of row {r.features!r} at {r.img_size} px: no such row"
                )
        weights = raw["weights"]
        special = str(weights).startswith("builtin:") or weights in ("hub", "none")
        resolved = weights if special else (base / weights).resolve()
        memory = raw.get("memory") or {}
        pair = raw.get("pair")
        return cls(
            name=str(raw["name"]),
            data=(base / raw["data"]).resolve(),
            weights=resolved,
            backbone=str(raw["backbone"]),
            runs=runs,
            pair=tuple(pair) if pair else None,
            workers=int(defaults.get("workers", 1)),
            batch_size=int(defaults.get("batch_size", 16)),
            memory=MemorySpec(
                list(memory.get("backbones", [])),
                [int(s) for s in memory.get("img_sizes", [])],
                int(memory.get("batch_size", 16)),
                dict(memory.get("overrides") or {}),
            ),
            path=path,
            backbone_kwargs=dict(raw.get("backbone_kwargs") or {}),
            compare=_comparisons(raw.get("compare") or [], {r.group for r in runs}),
        )


def _comparisons(raw: Any, groups: set[tuple[str, int]]) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """`compare: [[ROW@SIZE, ROW@SIZE], ...]` -> ((row, size), (row, size)) pairs, each naming a row of the plan."""

    def group(text: Any, i: int) -> tuple[str, int]:
        name, _, size = str(text).rpartition("@")
        if not name or not size.isdigit():
            raise ConfigError(f"compare[{i}]: {text!r} should be ROW@SIZE, e.g. fpt_plus@448")
        if (name, int(size)) not in groups:
            raise ConfigError(f"compare[{i}]: no row {name!r} at {size} px in this plan")
        return name, int(size)

    if not isinstance(raw, list):
        raise ConfigError("compare must be a list of [ROW@SIZE, ROW@SIZE] pairs")
    pairs = []
    for i, item in enumerate(raw):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ConfigError(f"compare[{i}]: expected a pair [A, B] of ROW@SIZE, got {item!r}")
        pairs.append((group(item[0], i), group(item[1], i)))
    return pairs


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _expand(row: Any, i: int) -> list[Run]:
    """A plan row -> its runs (one per resolution × learning rate)."""
    if not isinstance(row, dict):
        raise ConfigError(f"rows[{i}] must be a mapping")
    unknown = set(row) - ROW_KEYS
    if unknown or not {"name", "method", "img_size", "epochs"} <= set(row):
        raise ConfigError(f"rows[{i}]: unknown keys {sorted(unknown)}; name, method, img_size, epochs are required")
    get_method(row["method"])  # unknown methods are refused by name
    lrs = [float(x) if x is not None else None for x in _as_list(row.get("lr"))]
    seeds = tuple(int(s) for s in _as_list(row.get("seeds", [0])))
    for key in ("model", "train", "data"):
        if not isinstance(row.get(key, {}), dict):
            raise ConfigError(f"rows[{i}]: {key!r} must be a mapping of config fields")
    if row.get("features") and not getattr(get_method(row["method"]).inputs, "reads_any_store", False):
        raise ConfigError(f"rows[{i}]: `features` (a probe on another row's stored features) needs a probe method "
                          "(linear, knn)")  # fmt: skip
    cv_folds = row.get("cv_folds", 0)
    if not isinstance(cv_folds, int) or isinstance(cv_folds, bool) or cv_folds < 0 or cv_folds == 1:
        raise ConfigError(f"rows[{i}]: cv_folds must be 0 (select on the validation split) or >= 2, got {cv_folds!r}")
    if cv_folds and row.get("features"):
        raise ConfigError(f"rows[{i}]: a probe (`features`) chooses its regularisation by its own cross-validation; "
                          "drop cv_folds")  # fmt: skip
    return [
        Run(
            str(row["name"]),
            row["method"],
            int(size),
            lr,
            int(row["epochs"]),
            seeds,
            dict(row.get("model") or {}),
            row.get("features"),
            len(lrs) > 1,
            row.get("store"),
            dict(row.get("train") or {}),
            dict(row.get("data") or {}),
            cv_folds,
        )
        for size in _as_list(row["img_size"])
        for lr in lrs
    ]

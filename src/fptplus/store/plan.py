"""What a store must hold (spec, fingerprint, plan) and the folder rules (new / resume / refuse, disk space)."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backbone import LPMSpec, provides_cls
from ..data.sources import DataIndex
from ..data.views import ViewConfig
from ..errors import ConfigError
from ..importance import num_selected_tokens
from ..model import FPTConfig, FusionPlan
from ..weights import create_vit, weights_identity
from .format import (
    MANIFEST,
    PLAN,
    PROGRESS,
    FieldSpec,
    StoreError,
    fingerprint_diff,
    make_fingerprint,
    read_json,
    sample_records,
    samples_diff,
    shard_file,
    store_fields,
    write_json_atomic,
)


@dataclass
class PreloadOptions:
    """How to build the store (none of these change the stored numbers except `dtype` and `batch_size`).

    Attributes:
        dtype: "float16" (default, half the bytes) or "float32" for K/V.
        batch_size: images per LPM forward (recorded in the plan: a resumed run keeps the original value).
        num_workers: decoding processes.
        shard_bytes: target size of one shard file set.
        skip_bad: skip undecodable files (listed in skipped.csv) instead of failing.
        overwrite: replace an existing store at the same path.
        side_source_size: stored side image size (default: 2 × side size, capped at the LPM size).
    """

    dtype: str = "float16"
    batch_size: int = 16
    num_workers: int = 2
    shard_bytes: int = 1 << 30
    skip_bad: bool = False
    overwrite: bool = False
    side_source_size: int | tuple[int, int] | None = None


@dataclass(frozen=True)
class StoreSpec:
    """What a model config implies for its store: LPM facts, views, layers, k, fields and fingerprint."""

    lpm: LPMSpec
    views: ViewConfig
    layers: tuple[int, ...]
    num_selected: int
    fields: dict[str, FieldSpec]
    fingerprint: dict[str, Any]


def store_spec(cfg: FPTConfig, side_source_size=None, dtype: str = "float16") -> StoreSpec:
    """The store a model config needs (shapes only: no weights are loaded, the weights file is hashed)."""
    vit = create_vit(cfg.backbone, cfg.img_size, None, "meta", **cfg.backbone_kwargs)
    spec = LPMSpec.from_vit(cfg.backbone, vit)
    views = ViewConfig(cfg.img_size, cfg.side_img_size, spec.mean, spec.std, side_source_size)
    fusion = FusionPlan.resolve(cfg, spec.depth)
    if not fusion.lpm_layers:
        raise ConfigError("nothing to preload: fused_layers=0 trains the side network alone (train it online)")
    k = num_selected_tokens(spec.num_tokens, cfg.token_ratio)
    fields = store_fields(spec, fusion.lpm_layers, k, views, dtype, provides_cls(vit, fusion.lpm_layers))
    fingerprint = make_fingerprint(
        spec,
        cfg.backbone_kwargs,
        weights_identity(cfg.backbone, cfg.weights),
        fusion.lpm_layers,
        cfg.token_ratio,
        k,
        cfg.importance,
        views,
        dtype,
    )
    return StoreSpec(spec, views, fusion.lpm_layers, k, fields, fingerprint)


def build_plan(index: DataIndex, spec: StoreSpec, options: PreloadOptions) -> dict[str, Any]:
    """The store's plan: fingerprint, fields, sample list and shard layout."""
    per_sample = sum(f.nbytes for f in spec.fields.values())
    per_shard = max(1, min(len(index.samples), options.shard_bytes // per_sample))
    return {
        "fingerprint": spec.fingerprint,
        "fields": {name: f.to_json() for name, f in spec.fields.items()},
        "classes": list(index.classes),
        "samples": sample_records(index.samples),
        "per_shard": per_shard,
        "num_shards": math.ceil(len(index.samples) / per_shard),
        "batch_size": options.batch_size,
    }


def _is_store(path: Path) -> bool:
    return (path / PLAN).exists() or (path / MANIFEST).exists()


def _remove_store(path: Path) -> None:
    """Deletes only files a store consists of (never anything else in the folder)."""
    for p in path.glob("shard-*.npy"):
        p.unlink()
    for name in (PLAN, MANIFEST, "splits.csv", "skipped.csv", PLAN + ".tmp", MANIFEST + ".tmp"):
        (path / name).unlink(missing_ok=True)
    shutil.rmtree(path / PROGRESS, ignore_errors=True)


def _rebuild_hint(path: Path) -> str:
    return f"rebuild it with `fptplus preload ... --out {path} --overwrite`, or preload into another --out folder"


def prepare_folder(out: Path, plan: dict[str, Any], overwrite: bool) -> str:
    """Creates/validates the store folder. Returns 'new', 'resume' or 'complete'."""
    if out.exists() and not out.is_dir():
        raise StoreError(f"store path {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not _is_store(out):
        raise StoreError(f"{out} is not empty and is not a feature store; choose an empty or new folder")
    if overwrite and _is_store(out):
        _remove_store(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST).exists():
        have = read_json(out / MANIFEST)
        problems = fingerprint_diff(have["fingerprint"], plan["fingerprint"])
        problems += samples_diff(have["samples"], plan["samples"])
        if problems:
            raise StoreError(f"{out} holds a different complete store ({'; '.join(problems)}); {_rebuild_hint(out)}")
        return "complete"
    if (out / PLAN).exists():
        have = read_json(out / PLAN)
        problems = fingerprint_diff(have["fingerprint"], plan["fingerprint"])
        problems += samples_diff(have["samples"], plan["samples"])
        if have["classes"] != plan["classes"]:
            problems.append(f"classes: store {have['classes']}, expected {plan['classes']}")
        if problems:
            raise StoreError(
                f"{out} holds an unfinished store of something else ({'; '.join(problems)}); {_rebuild_hint(out)}"
            )
        return "resume"
    write_json_atomic(out / PLAN, plan)
    return "new"


def check_disk(out: Path, plan: dict[str, Any]) -> None:
    fields = {k: FieldSpec(v["dtype"], tuple(v["shape"])) for k, v in plan["fields"].items()}
    n = len(plan["samples"])
    needed = 0
    for i in range(plan["num_shards"]):
        rows = min(plan["per_shard"], n - i * plan["per_shard"])
        for name, spec in fields.items():
            path = shard_file(out, i, name)
            have = path.stat().st_blocks * 512 if path.exists() else 0
            needed += max(0, rows * spec.nbytes + 128 - have)
    free = shutil.disk_usage(out).free
    if needed > free:
        raise StoreError(
            f"not enough disk space for the feature store in {out}: needs {needed / 2**30:.2f} GiB more, "
            f"{free / 2**30:.2f} GiB free. Free space, choose another --out, or store less "
            "(--dtype float16, a lower token ratio, fewer fused layers)"
        )

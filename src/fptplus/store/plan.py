"""What a store must hold (spec, fingerprint, plan) and the folder rules (new / resume / refuse, disk space)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones import LPMSpec, lpm_spec, weights_identity
from ..data.sources import DataIndex
from ..data.views import ViewConfig
from ..errors import ConfigError
from ..files import display, human_bytes
from ..importance import num_selected_tokens
from ..lpm import KV_FIELDS, provides_pooled
from ..model import FPTConfig, FusionPlan
from .codecs import CODECS, POOLED_FIELDS
from .format import (
    MANIFEST,
    MANIFEST_SCHEMA,
    PLAN,
    PLAN_SCHEMA,
    PROGRESS,
    FieldSpec,
    StoreError,
    fingerprint_diff,
    make_fingerprint,
    read_record,
    rebuild_hint,
    sample_records,
    samples_diff,
    shard_file,
    write_json_atomic,
)
from .lock import LOCK_FILE
from .options import CodecName, PreloadOptions  # noqa: F401 (re-exported)
from .reader import changed_images

NPY_HEADER = 128  # bytes before the data in each .npy shard file


@dataclass(frozen=True)
class StoreSpec:
    """What a model config implies for its store: LPM facts, views, layers, k, fields and fingerprint."""

    lpm: LPMSpec
    views: ViewConfig
    layers: tuple[int, ...]
    num_selected: int
    fields: dict[str, FieldSpec]
    fingerprint: dict[str, Any]


def store_fields(
    spec: LPMSpec, layers: tuple[int, ...], k: int, views: ViewConfig, codec: str, pooled: bool = False,
    scores: bool = False,
) -> dict[str, FieldSpec]:  # fmt: skip
    """Per-sample arrays: the codec's K/V (and the pooled CLS / mean patch token, when the forward yields them),
    indices, side source."""
    if codec not in CODECS:
        raise StoreError(f"store dtype/codec must be one of {sorted(CODECS)}, got {codec!r}")
    L, H, d = len(layers), spec.num_heads, spec.head_dim
    index_dtype = "int16" if spec.num_tokens <= np.iinfo(np.int16).max else "int32"
    fields = CODECS[codec].fields((L, H, k, d), spec.embed_dim if pooled else None)
    fields["indices"] = FieldSpec(index_dtype, (L, H, k))
    if scores:
        fields["scores"] = FieldSpec("float32", (L, H, k))  # the selector's score of each kept token, descending
    fields["side"] = FieldSpec("uint8", (3, *views.source_hw))
    order = (*KV_FIELDS, "indices", "scores", "side", *POOLED_FIELDS)
    return {name: fields[name] for name in order if name in fields}


def store_spec(cfg: FPTConfig, side_source_size=None, dtype: str = "float16", resize: str = "squash",
               store_ratio: float | None = None) -> StoreSpec:  # fmt: skip
    """The store a model config needs (shapes only: no weights are loaded, the weights file is hashed); with
    `store_ratio` (>= cfg.token_ratio) the store keeps that fraction of the tokens, best first."""
    if store_ratio is not None:
        if store_ratio < cfg.token_ratio:
            raise ConfigError(f"store_ratio {store_ratio} is below the token_ratio {cfg.token_ratio} the model reads: "
                              "a store serves ratios up to its own")  # fmt: skip
        if cfg.importance == "all" and store_ratio != 1.0:
            raise ConfigError("importance 'all' keeps every token: store_ratio must be 1 (or unset)")
        cfg = dataclasses.replace(cfg, token_ratio=store_ratio)
    spec = lpm_spec(cfg.backbone, cfg.img_size, cfg.backbone_kwargs)
    views = ViewConfig(cfg.img_size, cfg.side_size(spec.patch_size), spec.mean, spec.std, side_source_size, resize)
    fusion = FusionPlan.resolve(cfg, spec.depth)
    if not fusion.lpm_layers:
        raise ConfigError("nothing to preload: fused_layers=0 trains the side network alone (train it online)")
    k = num_selected_tokens(spec.num_tokens, cfg.token_ratio)
    fields = store_fields(spec, fusion.lpm_layers, k, views, dtype, provides_pooled(spec, fusion.lpm_layers),
                          scores=k < spec.num_tokens)  # fmt: skip
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


def store_serves(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """What keeps a store (fingerprint `have`) from serving `want`: any difference, except that a store with more
    tokens per head (kept best first) or more fused layers serves fewer."""
    ignore: tuple[str, ...] = ()
    if have.get("num_selected", 0) >= want.get("num_selected", 0):
        ignore += ("token_ratio", "num_selected")
    if set(want.get("fused_layers", [])) <= set(have.get("fused_layers", [])):
        ignore += ("fused_layers",)
    return fingerprint_diff(have, want, ignore)


def _is_store(path: Path) -> bool:
    """A store, finished or not (a folder holding only the writer lock is a store whose writer just started)."""
    return any((path / name).exists() for name in (PLAN, MANIFEST, LOCK_FILE))


def _remove_store(path: Path) -> None:
    """Deletes only files a store consists of (never anything else in the folder; the lock file stays)."""
    for p in path.glob("shard-*.npy"):
        p.unlink()
    for name in (PLAN, MANIFEST, "splits.csv", "skipped.csv"):
        (path / name).unlink(missing_ok=True)
    for p in [*path.glob(PLAN + ".*tmp"), *path.glob(MANIFEST + ".*tmp"), *path.glob("splits.csv.*tmp")]:
        p.unlink(missing_ok=True)
    shutil.rmtree(path / PROGRESS, ignore_errors=True)


def _rebuild_hint(path: Path) -> str:
    return rebuild_hint(path)


def check_folder(out: Path) -> None:
    """Refuses a store path that is a file or a non-empty folder holding something other than a store."""
    if out.exists() and not out.is_dir():
        raise StoreError(f"store path {display(out)} exists and is not a folder")
    if out.is_dir() and not _is_store(out) and any(out.iterdir()):
        raise StoreError(f"{display(out)} is not empty and is not a feature store; choose an empty or new folder")


def prepare_folder(
    out: Path, plan: dict[str, Any], overwrite: bool, index: DataIndex | None = None, dry: bool = False
) -> str:
    """Creates/validates the store folder. Returns 'new', 'resume' or 'complete'.

    A complete store is 'complete' only when its fingerprint, samples and (with `index`) image files still match;
    anything else is refused with what differs. `dry` only looks (no folder created, nothing removed or written).
    """
    check_folder(out)
    if overwrite and not dry and _is_store(out):
        _remove_store(out)
    if (out / MANIFEST).exists():
        have = read_record(out / MANIFEST, MANIFEST_SCHEMA)
        problems = store_serves(have["fingerprint"], plan["fingerprint"])
        problems += samples_diff(have["samples"], plan["samples"])
        if problems:
            raise StoreError(f"{display(out)} holds a different complete store ({'; '.join(problems)}); "
                             f"{_rebuild_hint(out)}")  # fmt: skip
        changed = changed_images(have["samples"], index) if index is not None else []
        if changed:
            raise StoreError(f"the complete store {display(out)} no longer matches its images ({changed[0]}); "
                             f"{_rebuild_hint(out)}")  # fmt: skip
        return "complete"
    if (out / PLAN).exists():
        if dry:
            return "resume"
        have = read_record(out / PLAN, PLAN_SCHEMA)
        problems = store_serves(have["fingerprint"], plan["fingerprint"])
        problems += samples_diff(have["samples"], plan["samples"])
        if have["classes"] != plan["classes"]:
            problems.append(f"classes: store {have['classes']}, expected {plan['classes']}")
        if problems:
            raise StoreError(
                f"{display(out)} holds an unfinished store of something else ({'; '.join(problems)}); "
                f"{_rebuild_hint(out)}"
            )
        return "resume"
    if dry:
        return "new"
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / PLAN, plan)
    return "new"


def _json_bytes(plan: dict[str, Any], out: Path) -> int:
    """Upper estimate of the JSON/CSV files a store writes next to its shards (manifest, progress, splits.csv)."""
    n = len(plan["samples"])
    paths = sum(len(str(s["path"]).encode("utf-8", "surrogateescape")) for s in plan["samples"])
    per_record = 240  # size, sha256, mtime_ns, skipped flags and JSON punctuation per sample
    root = len(str(out.resolve()))
    manifest = 2 * len(json.dumps(plan["fingerprint"])) + paths + n * per_record + 4096
    progress = n * per_record + plan["num_shards"] * 4096
    splits_csv = paths + n * (root + 64)
    return manifest + progress + splits_csv


def disk_needed(out: Path, plan: dict[str, Any]) -> int:
    """Bytes the store still needs on disk: every shard file rounded up to whole blocks, and its JSON/CSV files."""
    fields = {k: FieldSpec(v["dtype"], tuple(v["shape"])) for k, v in plan["fields"].items()}
    try:
        block = max(512, os.statvfs(out).f_frsize)
    except (AttributeError, OSError):
        block = 4096
    n = len(plan["samples"])
    needed = 0
    for i in range(plan["num_shards"]):
        rows = min(plan["per_shard"], n - i * plan["per_shard"])
        for name, spec in fields.items():
            path = shard_file(out, i, name)
            have = path.stat().st_blocks * 512 if path.exists() else 0
            size = -(-(rows * spec.nbytes + NPY_HEADER) // block) * block
            needed += max(0, size - have)
    return needed + -(-_json_bytes(plan, out) // block) * block


def check_disk(out: Path, plan: dict[str, Any]) -> None:
    """Refuses to start when the store cannot fit on its disk (before any compute)."""
    needed = disk_needed(out, plan)
    free = shutil.disk_usage(out).free
    if needed > free:
        raise StoreError(
            f"not enough disk space for the feature store in {display(out)}: needs {human_bytes(needed)} more, "
            f"{human_bytes(free)} free. Free space, choose another --out, or store less "
            "(--dtype float16, a lower token ratio, fewer fused layers)"
        )

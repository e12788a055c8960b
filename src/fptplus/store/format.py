"""On-disk format of the feature store: fields, fingerprint, plan and manifest.

A store is a folder:

    plan.json                 what is being built: fingerprint, fields, sample list, shard layout (written first)
    shard-00000.keys.npy      (n, L, H, k, d) fp16/fp32 keys of the selected tokens
    shard-00000.values.npy    (n, L, H, k, d) values
    shard-00000.indices.npy   (n, L, H, k)    int16/int32 token positions (0 = CLS)
    shard-00000.side.npy      (n, 3, s, s)    uint8 side source image (the side view is cut from it)
    shard-00000.cls.npy       (n, D)          the LPM's final-normed CLS token   } when the top fused layer is the
    shard-00000.patch_mean.npy (n, D)         the mean of its final-normed patches } last block (format 3 on)
    progress/shard-00000.json rows done so far (only while building)
    splits.csv                the sample list (path,label,split,group), reloadable as a CSV manifest
    skipped.csv               files that could not be decoded and were skipped (only with --skip-bad)
    manifest.json             written last, atomically: the store is complete iff it exists

Every shard file is a plain .npy (memory-mappable, self-describing). The fingerprint records everything
that changes the stored numbers; a store whose fingerprint or sample list differs from what training
expects is refused, never reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones import LPMSpec
from ..data.sources import Sample
from ..data.views import ViewConfig
from ..errors import FPTPlusError
from ..files import (
    check_records,
    display,
    read_json_schema,
    write_json_atomic,  # noqa: F401  (re-exported for the store modules)
)

FORMAT_VERSION = 3  # 3: + patch_mean (the frozen-feature probes' CLS ⊕ mean patch token); 2: fields as 3 otherwise
COMPATIBLE_VERSIONS = (2, 3)  # K/V, indices, side and cls are identical: a format-2 store serves FPT/FPT+ training
PLAN = "plan.json"
MANIFEST = "manifest.json"
PROGRESS = "progress"


class StoreError(FPTPlusError):
    """A feature store that is missing, incomplete, corrupt, or does not match what is asked of it."""


@dataclass(frozen=True)
class FieldSpec:
    """One per-sample array: numpy dtype name and per-sample shape."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * np.prod(self.shape))

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape)}


# how images reach the LPM resolution, as stores record it (stores made before the crop keep their strings)
RESIZE_IDENTITY = {"squash": "bilinear+antialias", "pad": "pad+bilinear+antialias",
                   "foreground": "foreground-crop-v1+pad+bilinear+antialias"}  # fmt: skip


def lpm_identity(spec: LPMSpec, backbone_kwargs: dict[str, Any], weights: dict[str, str], resize: str
                 ) -> dict[str, Any]:  # fmt: skip
    """What fixes the frozen model's output for an image: backbone, weights, resolution, normalisation, resize (the
    fingerprint keys a probe's features depend on)."""
    return {
        "backbone": spec.name,
        "backbone_kwargs": dict(sorted(backbone_kwargs.items())),
        "weights": weights,
        "lpm_size": list(spec.img_size),
        "mean": list(spec.mean),
        "std": list(spec.std),
        "resize": RESIZE_IDENTITY[resize],
    }


def make_fingerprint(
    spec: LPMSpec,
    backbone_kwargs: dict[str, Any],
    weights: dict[str, str],
    layers: tuple[int, ...],
    token_ratio: float,
    k: int,
    importance: str,
    views: ViewConfig,
    dtype: str,
) -> dict[str, Any]:
    """Everything that changes the stored numbers."""
    return {
        "format_version": FORMAT_VERSION,
        **lpm_identity(spec, backbone_kwargs, weights, views.resize),
        "fused_layers": list(layers),
        "token_ratio": token_ratio,
        "num_selected": k,
        "importance": importance,
        "side_source_size": list(views.source_hw),
        "dtype": dtype,
    }


def sample_records(samples: list[Sample]) -> list[dict[str, Any]]:
    return [{"path": s.path, "label": s.label, "split": s.split, "group": s.group} for s in samples]


def fingerprint_diff(have: dict[str, Any], want: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """Human-readable differences 'key: store X, expected Y' (format versions that store the same K/V agree; what a
    store lacks, e.g. a format-2 store's patch_mean, is refused by whoever needs it)."""
    keys = sorted((set(have) | set(want)) - set(ignore))
    if {have.get("format_version"), want.get("format_version")} <= set(COMPATIBLE_VERSIONS):
        keys = [k for k in keys if k != "format_version"]
    return [f"{k}: store has {have.get(k)!r}, expected {want.get(k)!r}" for k in keys if have.get(k) != want.get(k)]


def samples_diff(have: list[dict[str, Any]], want: list[dict[str, Any]], limit: int = 5) -> list[str]:
    """Differences between two sample lists (paths, labels, order).

    The split is not compared: features do not depend on it, so one store serves every split seed and every fold
    of a cross-validation (a run reads its split from its own index; the store's splits.csv is the builder's).
    """
    key = lambda r: (r["path"], r["label"])  # noqa: E731
    have_set, want_set = {key(r) for r in have}, {key(r) for r in want}
    out = []
    missing, extra = sorted(want_set - have_set), sorted(have_set - want_set)
    if missing:
        out.append(f"{len(missing)} dataset samples are not in the store, e.g. {[m[0] for m in missing[:limit]]}")
    if extra:
        out.append(f"{len(extra)} store samples are not in the dataset, e.g. {[m[0] for m in extra[:limit]]}")
    if not out and [key(r) for r in have] != [key(r) for r in want]:
        out.append("same samples in a different order")
    return out


DAMAGED_FIX = "rebuild it: fptplus preload ... --out {root} --overwrite (or preload into another --out)"
FINGERPRINT_SCHEMA = {"format_version": int, "fused_layers": list, "side_source_size": list, "dtype": str}
FIELD_SCHEMA = {"dtype": str, "shape": list}
SAMPLE_SCHEMA = {"path": str, "label": int, "split": str}
SHARD_SCHEMA = {"name": str, "start": int, "count": int, "sha256": dict}
PLAN_SCHEMA = {"fingerprint": FINGERPRINT_SCHEMA, "fields": dict, "classes": list, "samples": list,
               "per_shard": int, "num_shards": int, "batch_size": int}  # fmt: skip
MANIFEST_SCHEMA = {**PLAN_SCHEMA, "shards": list, "complete": bool}
PROGRESS_SCHEMA = {"done": int, "records": list, "complete": bool}


def read_record(path: Path, schema: dict[str, Any], root: Path | None = None) -> dict[str, Any]:
    """A plan, manifest or progress file, checked key by key and type by type.

    A damaged file (truncated, not UTF-8, not JSON, a key missing or of the wrong type, fields or shards that
    do not add up) raises a StoreError that names it and says how to rebuild the store.
    """
    fix = DAMAGED_FIX.format(root=display(root or path.parent))
    obj = read_json_schema(path, schema, StoreError, fix)
    if "fields" in schema:
        try:
            fields = {k: FieldSpec(v["dtype"], tuple(int(n) for n in v["shape"])) for k, v in obj["fields"].items()}
            for f in fields.values():
                f.nbytes  # noqa: B018  (valid numpy dtype)
        except (TypeError, KeyError, ValueError) as err:
            raise StoreError(f"{display(path)} is damaged: bad 'fields' entry ({err}); {fix}") from None
        check_records(obj["samples"], SAMPLE_SCHEMA, "samples", path, StoreError, fix)
        if obj["per_shard"] < 1 or obj["num_shards"] != -(-len(obj["samples"]) // obj["per_shard"]):
            raise StoreError(f"{display(path)} is damaged: shard layout does not fit the sample count; {fix}")
    if "shards" in schema:
        check_records(obj["shards"], SHARD_SCHEMA, "shards", path, StoreError, fix)
        if len(obj["shards"]) != obj["num_shards"] or sum(s["count"] for s in obj["shards"]) != len(obj["samples"]):
            raise StoreError(f"{display(path)} is damaged: its shards do not add up to its samples; {fix}")
    return obj


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def shard_file(root: Path, i: int, field: str) -> Path:
    return root / f"{shard_name(i)}.{field}.npy"


USERS = "users.txt"  # the run folders that trained from this store, one per line (appended by `train`)


def record_user(root: Path, run: Path) -> None:
    """Notes that the run folder `run` reads the store `root` (a line appended once; never fails a run)."""
    line = str(Path(run).resolve())
    try:
        if line in store_users(root, existing=False):
            return
        with open(root / USERS, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError:
        pass


def store_users(root: Path, existing: bool = True) -> list[str]:
    """The run folders recorded as reading the store (with `existing`: those still there)."""
    try:
        lines = (root / USERS).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [u for u in dict.fromkeys(lines) if u and (not existing or Path(u).is_dir())]


def rebuild_hint(root: Path) -> str:
    """How to rebuild a store, warning when runs still read it (rebuilding it in place changes their inputs)."""
    users = store_users(root)
    hint = f"rebuild it with `fptplus preload ... --out {display(root)} --overwrite`, or preload into another --out"
    if users:
        shown = ", ".join(display(u) for u in users[:3]) + (", ..." if len(users) > 3 else "")
        hint = (f"{len(users)} run(s) read this store ({shown}): preload into another --out folder (rebuilding it in "
                f"place with `--overwrite` changes what those runs evaluate on)")  # fmt: skip
    return hint

"""Reading a complete feature store by sample index (memory maps, no copies), checking and verifying it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.sources import DataIndex
from ..errors import FPTPlusError
from ..files import display
from ..logs import get_logger, info_of
from ..weights import file_sha256
from .codecs import FLOAT_FIELDS, SCALE_FIELDS, codec_of
from .format import (
    DAMAGED_FIX,
    MANIFEST,
    MANIFEST_SCHEMA,
    PLAN,
    FieldSpec,
    StoreError,
    fingerprint_diff,
    read_record,
    rebuild_hint,
    sample_records,
    samples_diff,
    shard_file,
)

_log = get_logger("store")

STORED_IMAGE = {"size": int, "sha256": str}
IMAGES_CACHE = "verified-images.json"  # every sample that was not skipped records its file


def _sha256(index: DataIndex, path: str) -> str | None:
    try:
        return hashlib.sha256(index.reader.read(path)[0]).hexdigest()
    except OSError:
        return None


def _unchanged_stamp(rec: dict[str, Any], info: Any) -> bool:
    """Whether nothing can have rewritten the file since it was preloaded: the same mtime and — when the store
    recorded them (format 3, folders) — the same inode and change time (an edit whose mtime is set back with
    `touch -r` still moves the ctime; a file replaced by another has another inode)."""
    if info.mtime_ns != rec.get("mtime_ns"):
        return False
    if "ctime_ns" in rec and info.ctime_ns is not None:
        return info.ctime_ns == rec["ctime_ns"] and info.inode == rec.get("inode")
    return True


def changed_images(records: list[dict[str, Any]], index: DataIndex, limit: int = 5) -> list[str]:
    """Images whose file changed since preloading: missing, another size, or other bytes. A file whose size, mtime,
    ctime and inode are as recorded is not read; the others are re-hashed once per file version (a copied dataset
    is read once, then trusted by its new stamp: `contents.VerifiedFiles`). What stays undetectable without
    `preload --verify`: a same-size rewrite on a filesystem that keeps no ctime or inode, or by someone who resets
    the system clock."""
    from .contents import VerifiedFiles

    verified = VerifiedFiles(IMAGES_CACHE)
    changed = []
    for rec, sample in zip(records, index.samples, strict=True):
        if rec.get("skipped"):
            continue
        info = index.reader.info(sample.path)
        if info is None or info.size != rec["size"]:
            changed.append(sample.path)
            continue
        if _unchanged_stamp(rec, info):
            continue
        key = index.reader.locate(sample.path)
        stamp = [info.size, info.mtime_ns, info.ctime_ns or 0, info.inode or 0]
        if verified.sha256(key, stamp) == rec["sha256"]:
            continue
        sha = _sha256(index, sample.path)
        if sha != rec["sha256"]:
            changed.append(sample.path)
        elif info.ctime_ns is not None:
            verified.add(key, stamp, sha)
    verified.save()
    if changed:
        shown = [display(c) for c in changed[:limit]]
        return [f"image files changed since preloading ({len(changed)}; other size or content), e.g. {shown}"]
    return []


class FeatureStore:
    """A complete store opened read-only. `store[i]` -> dict of per-sample numpy arrays (views into memory maps).

    Memory maps are opened lazily in each process (DataLoader workers included) and never pickled.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / MANIFEST).exists():
            if (self.path / PLAN).exists():
                raise StoreError(
                    f"{self.path} is an unfinished feature store (no manifest.json): rerun the same `fptplus "
                    "preload` command to complete it"
                )
            raise StoreError(f"{self.path} is not a feature store (no manifest.json); build one with `fptplus preload`")
        self.manifest = read_record(self.path / MANIFEST, MANIFEST_SCHEMA)
        if not self.manifest["complete"]:
            raise StoreError(f"{self.path}: manifest is not marked complete; rerun `fptplus preload`")
        fix = DAMAGED_FIX.format(root=display(self.path))
        for i, rec in enumerate(self.manifest["samples"]):
            if not rec.get("skipped") and not all(isinstance(rec.get(k), t) for k, t in STORED_IMAGE.items()):
                raise StoreError(
                    f"{display(self.path / MANIFEST)} is damaged: sample {i} has no file size/sha256; {fix}"
                )
        self.fields = {k: FieldSpec(v["dtype"], tuple(v["shape"])) for k, v in self.manifest["fields"].items()}
        self.per_shard = int(self.manifest["per_shard"])
        self._maps: dict[tuple[int, str], np.ndarray] | None = None
        self._num_tokens: int | None = None
        self.verified = False  # shard files checked against the manifest's sha256 (`verify_contents`)

    # -- metadata ---------------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.manifest["fingerprint"]

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def samples(self) -> list[dict[str, Any]]:
        return self.manifest["samples"]

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.fingerprint["fused_layers"])

    @property
    def num_selected(self) -> int:
        """Tokens kept per layer and head, best first (any lower ratio reads a prefix of them)."""
        return int(self.fingerprint.get("num_selected", self.fields["indices"].shape[-1]))

    def usable(self, split: str | None = None) -> list[int]:
        """Indices of samples that were not skipped, optionally of one split."""
        keep = [not s.get("skipped") and (split is None or s["split"] == split) for s in self.samples]
        return [i for i, ok in enumerate(keep) if ok]

    def __len__(self) -> int:
        return len(self.samples)

    def bytes_per_sample(self) -> dict[str, int]:
        return {k: f.nbytes for k, f in self.fields.items()}

    # -- data -------------------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": None}

    def _map(self, shard: int, field: str) -> np.ndarray:
        if self._maps is None:
            self._maps = {}
        key = (shard, field)
        if key not in self._maps:
            path = shard_file(self.path, shard, field)
            try:
                arr = np.load(path, mmap_mode="c")  # copy-on-write: writable views, file never modified
            except (OSError, ValueError) as err:
                raise StoreError(
                    f"{path} is missing or damaged ({err}); check the store with `fptplus preload --verify` "
                    "and rebuild it"
                ) from err
            want = (self.manifest["shards"][shard]["count"], *self.fields[field].shape)
            if arr.shape != want or arr.dtype != np.dtype(self.fields[field].dtype):
                raise StoreError(f"{path} has shape {arr.shape} {arr.dtype}, manifest says {want}; rebuild the store")
            self._maps[key] = arr
        return self._maps[key]

    @property
    def codec(self):
        """How this store's K/V and CLS are encoded (see `codecs`)."""
        return codec_of(self.fingerprint)

    def features(self, i: int) -> dict[str, torch.Tensor]:
        """Sample i as training reads it: keys/values (L, H, k, d) (float, or int8 codes with keys_scale/values_scale
        (L, H, k) for an int8 store), cls and patch_mean (D,) when stored, int indices (L, H, k), uint8 side."""
        rec = self[i]
        return {f: self.codec.decode(f, a) if f in FLOAT_FIELDS else torch.from_numpy(a) for f, a in rec.items()}

    @property
    def num_tokens(self) -> int:
        """N, the frozen model's sequence length (token indices must lie in 0..N-1)."""
        if self._num_tokens is None:
            from ..backbones import lpm_spec

            fp = self.fingerprint
            self._num_tokens = lpm_spec(fp["backbone"], tuple(fp["lpm_size"]), fp.get("backbone_kwargs", {})).num_tokens
        return self._num_tokens

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if self.samples[i].get("skipped"):
            raise StoreError(f"sample {i} ({self.samples[i]['path']}) was skipped at preload (undecodable file)")
        shard, row = divmod(i, self.per_shard)
        rec = {f: self._map(shard, f)[row] for f in self.fields}
        idx = rec.get("indices")
        if idx is not None and idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.num_tokens):
            raise StoreError(
                f"{display(shard_file(self.path, shard, 'indices'))}: sample {i} ({self.samples[i]['path']}) holds "
                f"token indices outside 0..{self.num_tokens - 1}: the store is damaged; rebuild it (fptplus preload "
                f"... --out {display(self.path)} --overwrite)"
            )
        return rec

    def verify_contents(self, log=None) -> None:
        """Refuses shard files whose bytes differ from the manifest's sha256 (each file version hashed once per
        machine, see `contents`); later calls in this process (and its loader workers) do nothing."""
        if not self.verified:
            from .contents import verify_shards

            verify_shards(self.path, self.manifest, list(self.fields), info_of(_log, log))
            self.verified = True

    # -- checks -----------------------------------------------------------------------------------------
    def check_compatible(
        self,
        fingerprint: dict[str, Any],
        index: DataIndex | None = None,
        subset_layers: bool = True,
    ) -> None:
        """Refuses the store unless it was made by the same LPM setup for the same dataset.

        Args:
            fingerprint: what training expects (see `format.make_fingerprint`); the K/V dtype may differ.
            index: the dataset training will use; paths, labels, classes and image files must match (any split)
                (size, and the content of every file whose modification time changed).
            subset_layers: accept a store holding more fused layers than asked (the needed ones are read), and more
                tokens per head than asked (a store keeps them best first: a lower ratio reads its first rows).
        """
        codec_of(self.fingerprint)  # any known codec serves (features are decoded); an unknown one is refused
        ignore = ("dtype", "codec", "fused_layers") if subset_layers else ("dtype", "codec")
        if subset_layers and self.num_selected >= fingerprint.get("num_selected", 0):
            ignore += ("token_ratio", "num_selected")
        problems = fingerprint_diff(self.fingerprint, fingerprint, ignore)
        want_layers = set(fingerprint["fused_layers"])
        if subset_layers and not want_layers <= set(self.layers):
            problems.append(f"fused_layers: store has {list(self.layers)}, needs {sorted(want_layers)}")
        if subset_layers and self.num_selected < fingerprint.get("num_selected", 0):
            problems.append(f"token_ratio: the store keeps {self.num_selected} tokens per head (ratio "
                            f"{self.fingerprint.get('token_ratio')}), this run needs {fingerprint['num_selected']} "
                            f"(ratio {fingerprint.get('token_ratio')}): preload with --store-ratio "
                            f"{fingerprint.get('token_ratio')} or more")  # fmt: skip
        if index is not None:
            if list(index.classes) != self.classes:
                problems.append(f"classes: store {self.classes}, dataset {list(index.classes)}")
            problems += samples_diff(self.samples, sample_records(index.samples))
            if not problems:
                problems += changed_images(self.samples, index)
        if problems:
            raise StoreError(
                f"feature store {self.path} does not match this run:\n  " + "\n  ".join(problems) + "\n"
                f"{rebuild_hint(self.path)[0].upper()}{rebuild_hint(self.path)[1:]}"
            )
        self.verify_contents()

    def layer_positions(self, layers: tuple[int, ...]) -> list[int]:
        """Positions along the stored L axis of the given LPM layers."""
        return [self.layers.index(layer) for layer in layers]

    def verify(self, index: DataIndex | None = None, log=None) -> list[str]:
        """Re-hashes every shard file, checks shapes and finiteness, and (with `index`) each image's bytes.

        Returns the problems found (empty when the store is sound).
        """
        log = info_of(_log, log)
        problems = []
        for s, shard in enumerate(self.manifest["shards"]):
            for f in self.fields:
                path = shard_file(self.path, s, f)
                if not path.exists():
                    problems.append(f"{path}: missing")
                    continue
                if file_sha256(path) != shard["sha256"][f]:
                    problems.append(f"{path}: content hash differs from the manifest (corrupt or truncated)")
                    continue
                try:
                    arr = self._map(s, f)
                except StoreError as err:
                    problems.append(str(err))
                    continue
                if f in (*FLOAT_FIELDS, *SCALE_FIELDS) and not np.isfinite(arr).all():
                    problems.append(f"{path}: contains NaN/inf")
            log(f"verify: shard {s + 1}/{len(self.manifest['shards'])} checked")
        if index is not None:
            for rec, sample in zip(self.samples, index.samples, strict=True):
                if rec.get("skipped"):
                    continue
                name = index.name(sample)
                try:
                    data, _ = index.reader.read(sample.path)
                except OSError as err:
                    problems.append(f"{name}: cannot read ({err})")
                    continue
                if len(data) != rec["size"] or hashlib.sha256(data).hexdigest() != rec["sha256"]:
                    problems.append(f"{name}: image changed since preloading")
        return problems


def open_store(path: str | Path) -> FeatureStore:
    try:
        return FeatureStore(path)
    except FPTPlusError:
        raise
    except Exception as err:  # a damaged manifest etc.
        raise StoreError(f"cannot open feature store {path}: {err}") from err

"""`preload`: run the frozen LPM once over every sample and write the feature store.

Resumable and byte-reproducible: samples are processed in fixed batches aligned to shard starts; after each
batch the shard's memory maps are flushed and its progress file is replaced atomically, so a killed run
resumes at the first unrecorded batch and recomputes exactly the same batches. Several processes
(`accelerate launch` / `torchrun`) take disjoint shards; rank 0 writes the manifest when all are done.

One writer at a time: rank 0 holds the store's lock (`store.lock`) from the folder check to the manifest, so a
second `preload` (or `train` sharing `--store`) waits for it, then finds the store complete and reuses it.
Every shard file's blocks are reserved (`posix_fallocate`) before it is written, so a full disk is a clear
error — rerun the same command after freeing space — never a SIGBUS in the middle of a memory-mapped write.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch.utils.data import DataLoader, Dataset

from .._testing import crash_point
from ..data.decode import DecodeError, undecodable_error
from ..data.sources import DataIndex
from ..data.views import Views
from ..engines import first_batch_check, make_engine
from ..files import display, human_bytes
from ..logs import Progress, get_logger, info_of
from ..lpm import KV_FIELDS, FrozenLPM
from ..model import FPTConfig
from ..threads import Placement, available_cores, place_decoding
from ..weights import file_sha256
from .codecs import codec_of
from .format import (
    MANIFEST,
    PLAN,
    PLAN_SCHEMA,
    PROGRESS,
    PROGRESS_SCHEMA,
    FieldSpec,
    StoreError,
    read_record,
    shard_file,
    shard_name,
    write_json_atomic,
)
from .lock import StoreLock
from .plan import PreloadOptions, build_plan, check_disk, check_folder, disk_needed, prepare_folder, store_spec

_log = get_logger("store")


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass
class PreloadReport:
    path: Path
    num_samples: int
    bytes_per_sample: dict[str, int]
    seconds: float
    processed: int
    run_seconds: float = 0.0  # time in the decode → LPM → write loop (excludes model building, hashing)
    skipped: list[dict[str, str]] = field(default_factory=list)
    complete: bool = True

    @property
    def kv_bytes_per_sample(self) -> int:
        """K and V bytes per image, with their scales for an int8 store."""
        return sum(n for f, n in self.bytes_per_sample.items() if f in KV_FIELDS)


class _Decode(Dataset):
    """Decodes one sample into (LPM view, side source) or an error string; runs in loader workers."""

    def __init__(self, index: DataIndex, views: Views) -> None:
        self.index, self.views = index, views

    def __len__(self) -> int:
        return len(self.index.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            decoded = self.index.load(i)
        except DecodeError as err:
            return {"i": i, "error": str(err)}
        hr = self.views.high_res(decoded.image)
        return {
            "i": i,
            "path": self.index.samples[i].path,
            "lpm": self.views.lpm_view(hr),
            "side": self.views.side_source(hr),
            "size": decoded.nbytes,
            "sha256": decoded.sha256,
            "mtime_ns": decoded.mtime_ns,
            "ctime_ns": decoded.ctime_ns,
            "inode": decoded.inode,
            "hw": list(decoded.image.shape[-2:]),
        }


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


@dataclass
class _Dist:
    rank: int
    world: int
    device: torch.device
    barrier: Callable[[], None]


def _dist(rank: int | None, world_size: int | None) -> _Dist:
    if rank is not None:
        return _Dist(rank, world_size or 1, torch.device("cpu"), lambda: None)
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # torchrun on a CPU-only machine: gloo
    return _Dist(state.process_index, state.num_processes, state.device, state.wait_for_everyone)


class _ShardWriter:
    """Memory maps and progress record of one shard."""

    def __init__(self, out: Path, i: int, plan: dict[str, Any]) -> None:
        self.out, self.i = out, i
        n = len(plan["samples"])
        self.start = i * plan["per_shard"]
        self.count = min(plan["per_shard"], n - self.start)
        self.progress_path = out / PROGRESS / f"{shard_name(i)}.json"
        self.fields = {k: (v["dtype"], tuple(v["shape"])) for k, v in plan["fields"].items()}
        self.progress = self._read_progress()
        self.maps: dict[str, np.memmap] = {}

    def _read_progress(self) -> dict[str, Any] | None:
        """This shard's progress record; a damaged one means the shard is recomputed (nothing is lost)."""
        if not self.progress_path.exists():
            return None
        try:
            progress = read_record(self.progress_path, PROGRESS_SCHEMA, self.out)
        except StoreError:
            return None
        if len(progress["records"]) != self.count or not 0 <= progress["done"] <= self.count:
            return None
        return progress

    @property
    def done(self) -> int:
        return self.progress["done"] if self.progress else 0

    @property
    def complete(self) -> bool:
        return bool(self.progress and self.progress.get("complete"))

    def open(self) -> None:
        if self.maps:
            return
        if self.progress is not None:
            try:
                self.maps = {f: open_memmap(shard_file(self.out, self.i, f), mode="r+") for f in self.fields}
                if all(m.shape == (self.count, *self.fields[f][1]) for f, m in self.maps.items()):
                    return
            except (OSError, ValueError):
                pass  # truncated or damaged: start this shard again
            self.progress = None
        self.maps = {}
        for f, (dt, shape) in self.fields.items():
            path = shard_file(self.out, self.i, f)
            self.maps[f] = open_memmap(path, mode="w+", dtype=dt, shape=(self.count, *shape))
            _reserve(path)
        self.progress = {"done": 0, "records": [None] * self.count, "complete": False}

    def write(self, row: int, item: dict[str, Any], arrays: dict[str, np.ndarray] | None) -> None:
        """One sample: the LPM's arrays (keys, values, indices[, cls, patch_mean]) and the decoded side source."""
        r = row - self.start
        if arrays is None:
            for m in self.maps.values():
                m[r] = 0
            self.progress["records"][r] = {"error": item["error"]}
            return
        for name, value in arrays.items():
            self.maps[name][r] = value
        self.maps["side"][r] = item["side"].numpy()
        stamp = {k: item[k] for k in ("ctime_ns", "inode", "hw") if item.get(k) is not None}  # ctime/inode: folders
        self.progress["records"][r] = {"size": item["size"], "sha256": item["sha256"], "mtime_ns": item["mtime_ns"],
                                       **stamp}  # fmt: skip

    def commit(self, done: int) -> None:
        for m in self.maps.values():
            m.flush()
        self.progress["done"] = done - self.start
        if self.progress["done"] == self.count:
            self.maps.clear()
            self.progress["complete"] = True
            self.progress["sha256"] = {f: file_sha256(shard_file(self.out, self.i, f)) for f in self.fields}
        write_json_atomic(self.progress_path, self.progress)

    def bad_rows(self) -> list[int]:
        return [self.start + r for r, rec in enumerate(self.progress["records"]) if rec and "error" in rec]


def _reserve(path: Path) -> None:
    """Allocates every block of a new shard file now: a full disk fails here (ENOSPC), not as a later SIGBUS."""
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows: write the zeros instead
        with open(path, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            block = b"\0" * (1 << 20)
            for start in range(0, size, len(block)):
                f.write(block[: min(len(block), size - start)])
            f.flush()
            os.fsync(f.fileno())
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _batches(writer: _ShardWriter, batch_size: int) -> list[list[int]]:
    first = writer.start + writer.done
    end = writer.start + writer.count
    aligned = writer.start + ((first - writer.start) // batch_size) * batch_size
    return [list(range(b, min(b + batch_size, end))) for b in range(aligned, end, batch_size)]


def _forward(engine, items: list[dict[str, Any]], device: torch.device, codec, fields: dict[str, Any]):
    """Batch arrays of the LPM's outputs that the store's plan lists (K/V and pooled features encoded by the
    store's codec; a resumed store of an older format keeps its own fields)."""
    x = torch.stack([it["lpm"] for it in items]).to(device)
    feats = engine(x)  # FrozenLPM's pass: PyTorch, or its exported graph in onnxruntime (`fptplus.engines`)
    tensors = {"keys": feats.keys, "values": feats.values, "cls": feats.cls, "patch_mean": feats.patch_mean}
    tensors = {name: t for name, t in tensors.items() if name in fields and t is not None}
    for name, t in tensors.items():
        bad = ~torch.isfinite(t.reshape(len(t), -1)).all(dim=1)
        if bad.any():
            paths = [items[j]["path"] for j in torch.nonzero(bad).flatten().tolist()]
            raise StoreError(
                f"the frozen model gave NaN/inf {name} for {len(paths)} image(s), e.g. {paths[:3]}: damaged weights, "
                "or images it cannot represent; nothing of this batch was stored"
            )
    out = {**codec.encode_batch(tensors), "indices": feats.indices.cpu().numpy()}
    if "scores" in fields and feats.scores is not None:
        out["scores"] = feats.scores.float().cpu().numpy()  # (B, L, H, k)
    return out


def preload(
    index: DataIndex,
    cfg: FPTConfig,
    out: str | Path,
    options: PreloadOptions | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    log: Callable[[str], None] | None = None,
) -> PreloadReport:
    """Builds (or resumes, or confirms) the feature store of `index` for the model `cfg` in `out`.

    Args:
        index: the dataset.
        cfg: the FPT/FPT+ config whose fused LPM layers, resolution, token ratio and weights are stored.
        out: store folder.
        options: dtype, batch size, workers, sharding, bad-file policy, overwrite, lock wait.
        rank, world_size: explicit process slot (default: from Accelerate / torchrun, else 0 of 1).
        log: progress lines (default: the `fptplus.store` logger).
    """
    log = info_of(_log, log)
    options = options or PreloadOptions()
    out = Path(out)
    t0 = time.perf_counter()
    dist = _dist(rank, world_size)
    spec = store_spec(cfg, options.side_source_size, options.dtype, options.resize, options.store_ratio)
    if options.store_ratio is not None:  # the frozen model selects the store's K tokens
        cfg = dataclasses.replace(cfg, token_ratio=options.store_ratio)
    plan = build_plan(index, spec, options)
    per_sample = {k: FieldSpec(v["dtype"], tuple(v["shape"])).nbytes for k, v in plan["fields"].items()}
    lock = None
    if dist.rank == 0:
        check_folder(out)
        complete = not options.overwrite and prepare_folder(out, plan, False, index, dry=True) == "complete"
        if complete:  # readers of a complete store take no lock
            log(f"{display(out)}: complete store already present (same fingerprint, samples and images); "
                "nothing to do")  # fmt: skip
            dist.barrier()
            return PreloadReport(out, len(index.samples), per_sample, time.perf_counter() - t0, 0)
        lock = StoreLock(out, options.lock_wait, log)
        lock.acquire()
    try:
        return _preload_locked(index, cfg, spec, out, options, plan, per_sample, dist, t0, log)
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        raise _disk_full(out, plan) from None
    finally:
        if lock is not None:
            lock.release()


def _disk_full(out: Path, plan: dict[str, Any]) -> StoreError:
    free = shutil.disk_usage(out).free
    return StoreError(
        f"disk full while writing the feature store {display(out)} ({human_bytes(free)} free; it still needs "
        f"about {human_bytes(disk_needed(out, plan))}). Free space and rerun the same command: it resumes where it "
        "stopped"
    )


def _preload_locked(index, cfg, spec, out, options, plan, per_sample, dist, t0, log) -> PreloadReport:
    """`preload` once this process may write (rank 0 holds the lock; other ranks write disjoint shards)."""
    if dist.rank == 0:
        state = prepare_folder(out, plan, options.overwrite, index)
        if state != "complete":
            check_disk(out, plan)
            (out / PROGRESS).mkdir(exist_ok=True)
    dist.barrier()
    if (out / MANIFEST).exists():
        log(f"{display(out)}: complete store already present (same fingerprint and samples); nothing to do")
        return PreloadReport(out, len(index.samples), per_sample, time.perf_counter() - t0, 0)
    plan = read_record(out / PLAN, PLAN_SCHEMA)  # a resumed run keeps the original batch size
    batch_size = plan["batch_size"]
    if batch_size != options.batch_size:
        log(f"resuming with the store's original batch size {batch_size} (asked {options.batch_size})")

    writers = [_ShardWriter(out, i, plan) for i in range(dist.rank, plan["num_shards"], dist.world)]
    todo = [(w, b) for w in writers if not w.complete for b in _batches(w, batch_size)]
    retry = [] if options.skip_bad else [(w, [r]) for w in writers if w.complete for r in w.bad_rows()]
    processed, run_seconds = 0, 0.0
    if todo or retry:
        views = Views(spec.views)
        built = dataclasses.replace(cfg, token_ratio=plan["fingerprint"]["token_ratio"])  # what the plan on disk keeps
        lpm = FrozenLPM.from_config(built, plan["fingerprint"]["fused_layers"])
        lpm.to(dist.device)
        fp = plan["fingerprint"]
        previous = torch.get_num_threads()
        try:  # torch's threads are the caller's again afterwards
            calibrate = _calibrates(options, dist, len(todo) + len(retry))
            _start_threads(options, dist, calibrate, log)  # the engine takes torch's thread count when it is made
            engine = make_engine(options.engine, lpm, dist.device, fp["weights"], fp.get("backbone_kwargs", {}),
                                 log)  # fmt: skip
            t_run = time.perf_counter()
            processed = _run(todo, retry, index, views, engine, dist, options, plan, calibrate, log)
            run_seconds = time.perf_counter() - t_run
        finally:
            torch.set_num_threads(previous)
    dist.barrier()
    report = PreloadReport(
        out, len(index.samples), per_sample, time.perf_counter() - t0, processed, run_seconds, complete=False
    )
    if dist.rank == 0:
        report.skipped = _finalize(out, index, plan, options.skip_bad)
        report.complete = True
    dist.barrier()  # nobody opens the store before rank 0 has written its manifest
    return report


CALIBRATION_BATCHES = 2  # decoded here and timed before `auto` threads place the rest (the 1st pass may compile)


def _calibrates(options: PreloadOptions, dist: _Dist, batches: int) -> bool:
    """Whether `auto` threads measure where to decode: on a CPU, one process, workers asked, batches to spare."""
    return (options.threads is None and options.num_workers > 0 and dist.device.type == "cpu" and dist.world == 1
            and batches > CALIBRATION_BATCHES)  # fmt: skip


def _start_threads(options: PreloadOptions, dist: _Dist, calibrate: bool, log: Callable[[str], None]) -> None:
    """torch's threads for the pass: `threads` N; every core while `auto` calibrates (`_run` may give cores back to
    the workers after the first batches); else the caller's (`train` chose them)."""
    if dist.device.type != "cpu":
        return
    if options.threads:
        torch.set_num_threads(options.threads)
        log(f"preload threads: {options.threads} (--threads), decode workers: {options.num_workers}")
    elif calibrate:
        torch.set_num_threads(available_cores())


@dataclass
class _Timing:
    """Seconds spent decoding (here) and in the pass, and their image counts, over the calibration batches."""

    decode_s: float = 0.0
    decoded: int = 0
    pass_s: float = 0.0
    passed: int = 0


def _loader(dataset: _Decode, batches: list[list[int]], workers: int) -> DataLoader:
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
                      persistent_workers=False)  # fmt: skip


def _run(todo, retry, index, views, engine, dist, options, plan, calibrating, log) -> int:
    dataset = _Decode(index, views)
    batches = [b for _, b in todo] + [b for _, b in retry]
    owners = [w for w, _ in todo] + [w for w, _ in retry]
    timing = _Timing()
    loader = None if calibrating else iter(_loader(dataset, batches, options.num_workers))
    total = sum(len(b) for b in batches)
    done, t0 = 0, time.perf_counter()
    interactive = log == _log.info  # a caller's own `log` gets lines, never a bar
    progress = Progress(total, f"preload [rank {dist.rank}]", log, seconds=10, bar=None if interactive else False,
                        unit="images")  # fmt: skip
    for n, (writer, batch) in enumerate(zip(owners, batches, strict=True), start=1):
        if loader is None:  # decoding here: calibrating, or placed here by it
            t = time.perf_counter()
            items = [dataset[i] for i in batch]
            timing.decode_s, timing.decoded = timing.decode_s + time.perf_counter() - t, timing.decoded + len(batch)
        else:
            items = next(loader)
        writer.open()
        good = [it for it in items if "error" not in it]
        if good and n == 1:  # an unverified onnxruntime graph is checked against PyTorch on the first real batch
            engine = first_batch_check(engine, torch.stack([it["lpm"] for it in good]), options.engine == "auto", log)
        t = time.perf_counter()
        arrays = _forward(engine, good, dist.device, codec_of(plan["fingerprint"]), plan["fields"]) if good else {}
        if calibrating and n > 1:  # the first pass may compile or warm up: not timed
            timing.pass_s, timing.passed = timing.pass_s + time.perf_counter() - t, timing.passed + len(good)
        for j, item in enumerate(good):
            writer.write(item["i"], item, {name: a[j] for name, a in arrays.items()})
        for item in items:
            if "error" in item:
                writer.write(item["i"], item, None)
        crash_point("preload-written", n)
        writer.commit(max(writer.start + writer.done, items[-1]["i"] + 1))
        crash_point("preload-committed", n)
        done += len(items)
        progress.update(done, f"{done / max(time.perf_counter() - t0, 1e-9):.1f} img/s")
        if calibrating and n == CALIBRATION_BATCHES:
            calibrating, cores = False, torch.get_num_threads()
            if timing.passed and timing.decoded:
                placed = place_decoding(timing.decode_s / timing.decoded, timing.pass_s / timing.passed, cores,
                                        options.num_workers)  # fmt: skip
            else:  # nothing decoded or passed (all undecodable): the workers as asked
                placed = Placement(max(1, cores - options.num_workers), options.num_workers, "nothing timed")
            log(f"preload threads: {placed.threads}, decode workers: {placed.workers} (auto: {placed.why})")
            if placed.workers:
                torch.set_num_threads(placed.threads)
                engine.set_threads(placed.threads)
                loader = iter(_loader(dataset, batches[n:], placed.workers))
    progress.close()
    return done


def _finalize(out: Path, index: DataIndex, plan: dict[str, Any], skip_bad: bool) -> list[dict[str, str]]:
    """Checks every shard is complete, then writes splits.csv, skipped.csv and (last) the manifest."""
    shards, records = [], []
    for i in range(plan["num_shards"]):
        path = out / PROGRESS / f"{shard_name(i)}.json"
        prog = read_record(path, PROGRESS_SCHEMA, out) if path.exists() else None
        if not prog or not prog.get("complete"):
            raise StoreError(f"{out}: shard {i} is not finished (did another process fail?); rerun the same command")
        start = i * plan["per_shard"]
        shards.append({"name": shard_name(i), "start": start, "count": len(prog["records"]), "sha256": prog["sha256"]})
        records += prog["records"]
    bad = [
        {"path": s["path"], "error": r["error"]} for s, r in zip(plan["samples"], records, strict=True) if "error" in r
    ]
    if bad and not skip_bad:
        raise undecodable_error([b["error"] for b in bad], len(records))
    samples = [
        {**s, **({"skipped": True} if "error" in r else r)} for s, r in zip(plan["samples"], records, strict=True)
    ]
    index.write_csv(out / "splits.csv")
    if bad:
        import csv

        with open(out / "skipped.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, ["path", "error"])
            w.writeheader()
            w.writerows(bad)
    manifest = {k: plan[k] for k in ("fingerprint", "fields", "classes", "per_shard", "num_shards", "batch_size")}
    manifest.update(samples=samples, shards=shards, skipped=len(bad), complete=True)
    write_json_atomic(out / MANIFEST, manifest)
    shutil.rmtree(out / PROGRESS, ignore_errors=True)
    return bad

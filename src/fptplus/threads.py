"""How many threads torch's intra-op pool gets: chosen from the cores this process may run on, not from the
machine's core count.

torch starts one intra-op thread per core of the machine and spins them while they wait; with data-loader workers
or other jobs on the same cores those threads fight for them (FPT+ from its store on a busy 2-core machine: 236 s per
epoch with torch's default threads, 18 s with one). `auto` takes the cores of this process's CPU affinity (what
`taskset`, cgroups and SLURM give it) minus the data-loader workers that decode images in parallel, at least one;
`--threads N` sets it; `--threads 0` keeps torch's default.

A preload on a CPU with `auto` threads measures instead (`place_decoding`, `fptplus.store.writer`): its first two
batches decode in the process with the pass on every core, then the rest decode where the timings say is faster —
in the workers (their cores taken from the pass), or between batches (cheap decoding beside a large pass).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_threads(requested: int | None, busy_workers: int = 0) -> tuple[int, str]:
    """(threads, why). `requested`: None = auto, 0 = torch's default, N = N; `busy_workers`: data-loader processes
    that compete for the same cores (decoding images; a feature store's reads cost almost nothing)."""
    cores = available_cores()
    if requested == 0:
        return torch.get_num_threads(), f"torch's default ({cores} cores available)"
    if requested:
        return requested, f"--threads {requested} ({cores} cores available)"
    n = max(1, cores - busy_workers)
    workers = f", {busy_workers} of them left to data-loader workers" if busy_workers else ""
    return n, f"auto: {cores} cores available to this process{workers}; --threads N to choose"


def apply_threads(requested: int | None, busy_workers: int, log) -> int:
    """Sets torch's intra-op threads (see `choose_threads`) on CPU and says what was chosen; returns the count."""
    if torch.cuda.is_available():
        return torch.get_num_threads()
    n, why = choose_threads(requested, busy_workers)
    torch.set_num_threads(n)
    log(f"threads: {n} ({why})")
    return n


@dataclass(frozen=True)
class Placement:
    """Where a preload decodes its images: `workers` processes beside a pass on `threads` threads, or (workers 0)
    this process between batches with the pass on every core."""

    threads: int
    workers: int
    why: str


def place_decoding(decode_s: float, pass_s: float, cores: int, workers: int) -> Placement:
    """Chooses from measured seconds per image: `decode_s` decoding one image on one core, `pass_s` the frozen
    model's pass on all `cores` threads.

    Workers overlap decoding with the pass but take their cores from it; decoding here gives the pass every core
    but adds the decoding to each image:

        with workers    max(pass_s · cores / (cores − workers), decode_s / workers)   (the pass scales with threads)
        here            pass_s + decode_s

    Cheap decoding (PNG / PGM, a large pass) belongs here; expensive decoding (12-megapixel JPEGs to a 224 px
    pass) in workers. Linear scaling flatters the pass's cost with fewer threads, so this leans to decoding here.
    """
    threads = max(1, cores - workers)
    with_workers = max(pass_s * cores / threads, decode_s / workers)
    here = pass_s + decode_s
    measured = f"decoding {decode_s:.2f} s/image, pass {pass_s:.2f} s/image on {cores} threads"
    beside = f"{workers} decode worker{'s' * (workers > 1)} beside {threads} thread{'s' * (threads > 1)}"
    if here < with_workers:
        return Placement(cores, 0, f"{measured}: decoding between batches, the pass on all {cores} threads "
                                   f"(~{here:.2f} s/image; {with_workers:.2f} with {beside})")  # fmt: skip
    return Placement(threads, workers, f"{measured}: {beside} (~{with_workers:.2f} s/image; {here:.2f} decoding "
                                       "between batches)")  # fmt: skip

"""How many threads torch's intra-op pool gets: chosen from the cores this process may run on, not from the
machine's core count.

torch starts one intra-op thread per core of the machine and spins them while they wait; with data-loader workers
or other jobs on the same cores those threads fight for them (FPT+ from its store on a busy 2-core machine: 236 s per
epoch with torch's default threads, 18 s with one). `auto` takes the cores of this process's CPU affinity (what
`taskset`, cgroups and SLURM give it) minus the data-loader workers that decode images in parallel, at least one;
`--threads N` sets it; `--threads 0` keeps torch's default.
"""

from __future__ import annotations

import os

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

"""torch's CPU threads beside other work: full speed on an idle machine, no collapse on a shared one.

torch's CPU wheel runs its intra-op threads on GNU OpenMP (libgomp; `torch.__config__.parallel_info()`).
A thread that finishes its part of a parallel region waits for the others by spinning (GOMP_SPINCOUNT,
300000 spins by default) before it sleeps. On an idle machine that keeps every thread hot. Beside ONE
other busy process on 2 cores it collapses: the thread a region waits for is descheduled while its
partner spins, and the training step ran at 3-4% of its idle speed (benchmarks/contention.py).

A short spin avoids the collapse, but what it costs when idle depends on the CPU: GOMP_SPINCOUNT=500 cost
about 5% on the AMD EPYC reference VM and 34% on an Intel Xeon VM (the stage 1 run: 1.33 against 1.93
steps/s through Ray Train), where waking a sleeping thread is slow. No spin count suits both.

So the spin stays libgomp's and the thread COUNT adapts instead: `ThreadGuard.tick()`, called between
steps by the loops that run several threads (stage 1/2 training, the VQ tokenizer fit), measures the CPU
that other processes used since its last look (/proc/stat minus this process). While they take the
cores this process's threads need, it runs fewer threads (one on 2 cores: a single thread waits for
nobody); when they stop, all of them again. "Other processes" is everything else on the machine, this
stage's DataLoader workers and the other ranks on the node included: oversubscribed cores collapse the
same way whoever holds them.

On an idle machine it never switches, so a run is bit-identical to a fixed-thread one; a run that shared
the CPU differs from it in float rounding (a thread count partitions reductions), and says so: the guard
logs every switch, and training logs `<stage>/torch_threads`.

A user's own OMP_WAIT_POLICY / GOMP_SPINCOUNT is forwarded to a local Ray's and a cluster job's workers
(`components.core.ray_runtime.ray_connection`) through `thread_environment()`.

    guard = ThreadGuard()          # in the thread that runs the loop's torch ops
    for step in ...:
        guard.tick()               # cheap: one /proc/stat read every `interval_s`
        train_step(...)
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

# the variables that set how libgomp waits: forwarded to Ray workers when the user set them
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
PROC_STAT = Path("/proc/stat")
# seconds between two looks at the machine's CPU use
INTERVAL_S = 1.0
# fewer threads once others use the cores this process's threads need, sustained this long (s): a short
# burst (a checkpoint copy, a log flush) never switches, so an otherwise idle run keeps its thread count
SUSTAIN_S = 4.0
# cores of slack: fewer threads when others use more than (cores - threads) + DOWN_SLACK, all of them again
# when others use less than (cores - threads) + UP_SLACK (the band keeps it from flapping)
DOWN_SLACK, UP_SLACK = 0.3, 0.15


def thread_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The user's OMP_WAIT_POLICY / GOMP_SPINCOUNT (from `environ`, default this process's), for workers."""
    environ = os.environ if environ is None else environ
    return {key: environ[key] for key in WAIT_VARIABLES if key in environ}


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the machine has been busy, CPU seconds of this process), both since boot / start."""
    with PROC_STAT.open() as f:
        values = [int(v) for v in f.readline().split()[1:]]
    busy = sum(values) - values[3] - values[4]  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def usable_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class ThreadGuard:
    """Runs torch with fewer intra-op threads while other processes use the cores (see the module docstring).

    Args:
        threads: the thread count when the machine is free (default: torch's current count).
        cores: the cores available (default: this process's CPU affinity).
        name: names the loop in the switch messages.
        reader: returns (machine busy CPU s, own CPU s); default /proc/stat and os.times.
        clock: monotonic seconds.
        log: where switch messages go (default: stderr).

    On a machine without /proc/stat (macOS) or with one thread to begin with, `tick()` does nothing.
    """

    def __init__(self, threads: int | None = None, *, cores: int | None = None, name: str = "torch",
                 reader: Callable[[], tuple[float, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] | None = None) -> None:
        import torch  # here, not at import: entry points import this module before torch loads

        self.max_threads = threads or torch.get_num_threads()
        self.cores = cores or usable_cores()
        self.name, self.clock = name, clock
        self.reader = reader or (cpu_seconds if PROC_STAT.exists() else None)
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.threads, self.switches, self.contended_s = self.max_threads, 0, 0.0
        self.enabled = self.max_threads > 1 and self.reader is not None
        self._last = (self.clock(), *self.reader()) if self.enabled else None

    def target(self, others: float, slack: float) -> int:
        """Threads that leave `others` cores (+ slack) to the other processes, within [1, max_threads]."""
        return max(1, min(self.max_threads, self.cores - math.ceil(others - slack)))

    def tick(self) -> int:
        """Look at the machine (at most every INTERVAL_S) and set torch's thread count; returns it.

        Call it in the thread that runs the loop's torch ops: the count is that thread's OpenMP setting.
        """
        if not self.enabled:
            return self.threads
        now = self.clock()
        then, busy0, own0 = self._last
        if now - then < INTERVAL_S:
            return self.threads
        busy, own = self.reader()
        self._last = (now, busy, own)
        others = max(0.0, (busy - busy0) - (own - own0)) / (now - then)
        fewer = self.target(others, DOWN_SLACK)
        if fewer < self.threads:
            self.contended_s += now - then
            if self.contended_s >= SUSTAIN_S:
                self._switch(fewer, others)
            return self.threads
        self.contended_s = 0.0
        more = self.target(others, UP_SLACK)
        if more > self.threads:
            self._switch(more, others)
        return self.threads

    def _switch(self, threads: int, others: float) -> None:
        why = "other processes use" if threads < self.threads else "other processes now use only"
        self.log(f"{self.name}: {why} {others:.1f} of {self.cores} cores: {threads} torch thread(s) "
                 f"instead of {self.threads}")
        import torch

        torch.set_num_threads(threads)
        self.threads, self.contended_s = threads, 0.0
        self.switches += 1

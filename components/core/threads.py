"""How torch's CPU threads wait for each other: short spins, so a stage survives sharing the machine.

torch's CPU wheel runs its intra-op threads on GNU OpenMP (libgomp; `torch.__config__.parallel_info()`).
At the end of every parallel region a thread that is done waits for the others, and between regions the
workers wait for the next one; libgomp waits by spinning GOMP_SPINCOUNT times (300000 by default, ~7 ms
on the 2-core reference machine) before it sleeps. On an idle machine that keeps every thread hot. Beside
ONE other busy process on 2 cores it collapses: the thread a region waits for is descheduled while its
partner spins, and the tokenizer fit and the training step ran at 3-6% of their idle speed
(benchmarks/contention.py). Sleeping at once (OMP_WAIT_POLICY=PASSIVE) keeps ~57% but costs 12-19%
when idle (every region then wakes a sleeping thread). GOMP_SPINCOUNT=500 (~12 us) kept 46-57% beside
the busy process and measured ~5% below the default when idle (0.89-1.04 over runs; this machine's
run-to-run noise is +-10%); a longer spin gives back the idle 5% but fell under 45% (1000: 43-46% for
the training step).

Only how threads wait changes: the same threads run the same kernels in the same partition, so results
are bit-identical. The thread counts each stage sets are untouched (they would change float rounding):
1-thread processes (rollout and encoding actors) have no thread to wait for.

libgomp reads these variables once, when torch loads, so every entry point sets them first
(`components.core.entry.prepare_environment`), and Ray workers get them from the job's runtime_env
(`components.core.ray_runtime.ray_connection`). A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.

    configure_threads()          # before `import torch`; child processes inherit it
    thread_environment()         # {"GOMP_SPINCOUNT": "500"}, or the user's own wait settings
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# spins of a waiting OpenMP thread before it sleeps (libgomp's default: 300000)
SPIN_COUNT = 500
# the variables that set how libgomp waits; GOMP_SPINCOUNT overrides OMP_WAIT_POLICY's spin count
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def thread_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The wait settings a process should start with.

    Args:
        environ: the environment to read (default: this process's).

    Returns:
        The user's OMP_WAIT_POLICY / GOMP_SPINCOUNT when either is set (left as they are), else
        {"GOMP_SPINCOUNT": "500"}.
    """
    environ = os.environ if environ is None else environ
    given = {key: environ[key] for key in WAIT_VARIABLES if key in environ}
    return given or {"GOMP_SPINCOUNT": str(SPIN_COUNT)}


def configure_threads() -> None:
    """Put `thread_environment()` into this process's environment.

    Call it before torch is imported: libgomp reads it when torch loads. Processes started afterwards
    (subprocesses, a local Ray's workers) inherit it either way.
    """
    os.environ.update(thread_environment())

"""What every workflow entry point does first and last: the process environment, and its metrics file.

from components.core.entry import prepare_environment, write_metrics

prepare_environment()  # before anything imports torch, Ray or transformers
...
write_metrics(summary.metrics(), args.metrics)
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from components.core.config import ConfigError

# read by Ray and Hugging Face when they are imported, so they are set before that, never overriding the user's
ENVIRONMENT = {
    # a local Ray binds to 127.0.0.1 only (this machine class has no other reachable interface)
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # weights and tokenizers load from local folders; nothing is downloaded at run time
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


# what Ray's job supervisor gives the driver of a `ray job submit` job: the job config (its runtime_env) as JSON
SUBMITTED_JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def prepare_environment() -> None:
    """Set the defaults of `ENVIRONMENT` that the user has not set (call it before Ray, torch or transformers loads).

    The driver of a `ray job submit` job also gets its CPU threads back: Ray's job supervisor is an actor that
    reserves no CPU, so Ray sets OMP_NUM_THREADS=1 in it, and the entrypoint inherits that. The stages the driver
    runs itself (the VQ tokenizer fit: 1.7 instead of 3.2 steps/s on 2 cores) would then use one thread; their
    Ray workers set their own. Dropped only when the job's runtime_env does not name it: a user who wants one
    thread in a submitted job passes `--runtime-env-json '{"env_vars": {"OMP_NUM_THREADS": "1"}}'`.
    """
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if (SUBMITTED_JOB_CONFIG in os.environ and os.environ.get("OMP_NUM_THREADS") == "1"
            and "OMP_NUM_THREADS" not in submitted_job_env_vars()):
        del os.environ["OMP_NUM_THREADS"]


def submitted_job_env_vars() -> dict[str, str]:
    """The env_vars of the runtime_env a `ray job submit` gave this driver's job ({} outside such a job)."""
    raw = os.environ.get(SUBMITTED_JOB_CONFIG)
    if not raw:
        return {}
    return (json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}


def write_metrics(metrics: Mapping[str, Any], path: str | Path, *, echo: bool = False) -> Path:
    """Write a stage's DVC metrics file (JSON; parents created); `echo` also prints it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metrics, indent=2)
    path.write_text(text)
    if echo:
        print(text)
    return path


def cli_main(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a workflow's `main`: a `ConfigError` from anywhere in it is one `config error:` line and exit 2."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except ConfigError as err:
            print(f"config error: {err}", file=sys.stderr)
            return 2

    return wrapped

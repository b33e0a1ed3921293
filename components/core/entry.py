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


def prepare_environment() -> None:
    """Set the defaults of `ENVIRONMENT` that the user has not set (call it before Ray or transformers loads)."""
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)


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

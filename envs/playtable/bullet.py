"""pybullet plumbing: private DIRECT clients, and silencing what pybullet prints from C.

Each env owns a `BulletClient` (several envs per process are independent). pybullet's C code
prints to the process's stdout (`argv[0]=` on every connect, V-HACD progress), which would corrupt
the JSON that `python -m envs.sequences` and similar tools write there; `quiet_stdout` redirects
file descriptor 1 around such calls.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import pybullet
from pybullet_utils import bullet_client


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send C-level stdout to /dev/null for the duration of the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def direct_client() -> bullet_client.BulletClient:
    """A new, private pybullet physics client in DIRECT mode (no GUI, CPU TinyRenderer)."""
    with quiet_stdout():
        return bullet_client.BulletClient(connection_mode=pybullet.DIRECT)

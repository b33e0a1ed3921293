"""Run a project command inside a job: the body of every SLURM command, stage and pipeline job.

A job's command runs on a compute node from the project folder, with this virtual environment's
`bin/` first on `PATH` (so `python`, `dvc` and `ray` are the project's, whatever the node's login
shell sets up); its output streams to the job's log files, never buffered in memory, because a
pipeline run can print for days.

    from cluster.commands import run_command
    run_command(["python", "-m", "components.core.config"])      # what a command job calls on its node
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# sys.executable, not its resolved target: a venv's python links to the base interpreter, whose bin/ has no ray/dvc
VENV_BIN = Path(sys.executable).parent


class CommandFailedError(RuntimeError):
    """A job's command exited with a non-zero status; the message names the command and where its output is."""


@dataclass(frozen=True)
class CommandSummary:
    """What a finished command job returns."""

    command: tuple[str, ...]
    returncode: int
    seconds: float


def project_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the project's `bin/` first on PATH, plus `extra`."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env.update(extra or {})
    return env


def run_command(command: Sequence[str], cwd: str | Path = PROJECT_ROOT,
                env: Mapping[str, str] | None = None) -> CommandSummary:
    """Run `command` in `cwd` with the project's environment, streaming its output to ours.

    Args:
        command: the program and its arguments, e.g. ["dvc", "repro"].
        cwd: working folder (the project root unless told otherwise).
        env: variables added to the project environment.

    Raises:
        CommandFailedError: the command exited non-zero (the message points at the job's log files).
    """
    if not command:
        raise ValueError("command: empty; give the program to run, e.g. ['dvc', 'repro']")
    start = time.monotonic()
    sys.stdout.flush()  # our own lines must precede the child's in the shared log file
    returncode = subprocess.run(list(command), cwd=cwd, env=project_env(env), check=False).returncode
    if returncode != 0:
        raise CommandFailedError(f"{' '.join(command)!r} exited with status {returncode} (cwd {cwd}); "
                                 f"its output is in this job's log files{_job_logs_hint()}")
    return CommandSummary(command=tuple(command), returncode=returncode, seconds=time.monotonic() - start)


def _job_logs_hint() -> str:
    try:
        import submitit

        paths = submitit.JobEnvironment().paths
    except RuntimeError:  # not inside a submitit job
        return ""
    return f": {paths.stdout} and {paths.stderr}"

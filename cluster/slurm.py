"""Run project work as SLURM jobs through submitit: a stage, the pipeline, any command, or a Ray cluster.

    python -m cluster.slurm pipeline                                    # `dvc repro` as one job
    python -m cluster.slurm stage tune --gpus 4 --mem 256               # `dvc repro tune`
    python -m cluster.slurm command -- python -m workflows.ablations    # any project command
    python -m cluster.slurm ray --nodes 4 --gpus 4 -- python workflows/ablations.py
    python -m cluster.slurm pipeline --begin now+8hours                 # SLURM begin time: run tonight
    python -m cluster.slurm --help

Resources default to `params.yaml`'s `slurm:` section (`--profile paper` for a 4-GPU node); flags
override them. `--profile` only sizes the job: the `dvc repro` it runs reads `params.yaml` as it is.
Each job gets a folder `<slurm.log_dir>/<job id>/` with its sbatch script, logs and pickled call and result.
From Python, `submit_command`, `submit_stage`, `submit_pipeline`, `submit_ray_cluster` and `submit_function`
return submitit jobs (`.job_id`, `.result()`, `.cancel()`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from submitit.core.utils import FailedJobError, FailedSubmissionError
from submitit.slurm.slurm import SlurmExecutor, SlurmInfoWatcher, SlurmJob

from cluster.commands import PROJECT_ROOT, VENV_BIN, run_command
from cluster.ray_on_slurm import run_ray_node
from cluster.resources import WorkerResources

logger = logging.getLogger(__name__)


class SlurmUnavailableError(RuntimeError):
    """This machine cannot submit SLURM jobs (no `sbatch`/`srun`)."""


class SlurmSubmissionError(RuntimeError):
    """sbatch refused a job (unknown partition, impossible resources, bad begin time...); sbatch's words follow."""


class QueueWatcher(SlurmInfoWatcher):
    """Job states from `squeue`, and from `sacct` only for jobs the controller no longer lists.

    submitit asks `sacct` alone, which needs SLURM's accounting database (slurmdbd). Without one
    (small clusters; the test harness) sacct answers "accounting storage is disabled", every state
    reads UNKNOWN, and a job that dies without writing its result leaves `.result()` waiting forever.
    `squeue --states=all` answers from the controller itself for pending, running and finished jobs
    (the last for MinJobAge, 300 s by default, longer than this watcher's 60 s polling interval).
    """

    def update(self) -> None:
        """Refresh the states of all unfinished registered jobs (one squeue call, sacct only if needed)."""
        ids = {job_id.split("_")[0] for job_id in self._registered - self._finished}
        if not ids:
            return
        self._num_calls += 1
        info = _squeue_states(ids)
        missing = ids - {job_id.split("_")[0] for job_id in info}
        if missing:
            info.update(_sacct_states(missing, self.read_info))
        self._info_dict.update(info)
        self._last_status_check = time.time()
        for job_id in self._registered - self._finished:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)


class ProjectSlurmJob(SlurmJob):
    """A submitit SLURM job whose state comes from QueueWatcher."""

    watcher = QueueWatcher(delay_s=60)


class ProjectSlurmExecutor(SlurmExecutor):
    """submitit's SLURM executor, making ProjectSlurmJobs."""

    job_class = ProjectSlurmJob


def make_executor(resources: WorkerResources, log_dir: str | Path, *, name: str,
                  begin: datetime | str | None = None) -> ProjectSlurmExecutor:
    """A submitit executor for jobs of this shape, with job folders `<log_dir>/<job id>/`.

    Args:
        resources: the job's shape (nodes, tasks, CPUs, GPUs, memory, time, partition).
        log_dir: parent of the job folders; must be on a file system shared with the compute nodes.
        name: SLURM job name (squeue's NAME column).
        begin: start no earlier than this: a datetime, or any sbatch --begin value (`now+1hour`, `22:00`).

    Raises:
        SlurmUnavailableError: no `sbatch` or `srun` on PATH.
    """
    missing = [tool for tool in ("sbatch", "srun", "squeue") if shutil.which(tool) is None]
    if missing:
        raise SlurmUnavailableError(
            f"SLURM is not available here: {', '.join(missing)} not on PATH. Submit from a SLURM login node, or "
            "install the SLURM client (Debian: slurm-client) and point SLURM_CONF at the cluster's slurm.conf.")
    executor = ProjectSlurmExecutor(folder=Path(log_dir).resolve() / "%j")
    extra = {} if begin is None else {"begin": format_begin(begin)}
    executor.update_parameters(job_name=name, additional_parameters=extra, **resources.to_submitit())
    return executor


def format_begin(begin: datetime | str) -> str:
    """An sbatch --begin value: datetimes as local `YYYY-MM-DDTHH:MM:SS`, strings passed through (SLURM parses them).

    SLURM reads the value in its own time zone; a naive datetime is taken to be local time here, an
    aware one is converted to it (the login node and the controller are assumed to share a zone).
    """
    if isinstance(begin, datetime):
        local = begin.astimezone() if begin.tzinfo is not None else begin
        return local.strftime("%Y-%m-%dT%H:%M:%S")
    if not begin.strip():
        raise ValueError("begin: empty; give a time such as 2026-12-01T02:00, now+2hours, tomorrow or 22:00")
    return begin.strip()


def submit_function(fn: Callable[..., Any], *args: Any, resources: WorkerResources, log_dir: str | Path,
                    name: str | None = None, begin: datetime | str | None = None, **kwargs: Any) -> ProjectSlurmJob:
    """Run `fn(*args, **kwargs)` as a SLURM job (once per task); `.result()` returns its value.

    Raises:
        SlurmUnavailableError: no SLURM client tools here.
        SlurmSubmissionError: sbatch refused the job; the message quotes it.
    """
    executor = make_executor(resources, log_dir, name=name or f"upvla-{fn.__name__}", begin=begin)
    try:
        return executor.submit(fn, *args, **kwargs)
    except (FailedJobError, FailedSubmissionError) as err:  # submitit runs sbatch as a "job" and says so
        raise SlurmSubmissionError(f"sbatch refused the job ({resources}): {str(err).strip()}") from err


def submit_command(command: Sequence[str], *, resources: WorkerResources, log_dir: str | Path,
                   name: str | None = None, begin: datetime | str | None = None,
                   cwd: str | Path = PROJECT_ROOT) -> ProjectSlurmJob:
    """Run a command from the project folder as a job; `.result()` is a CommandSummary (raises if it failed)."""
    if not command:
        raise ValueError("command: empty; give the program to run, e.g. ['python', '-m', 'workflows.ablations']")
    return submit_function(run_command, list(command), str(cwd), resources=resources, log_dir=log_dir,
                           name=name or f"upvla-{Path(command[0]).name}", begin=begin)


def submit_stage(stage: str, **options: Any) -> ProjectSlurmJob:
    """Run `dvc repro <stage>` (the stage, after whatever it depends on that changed) as a job."""
    stages = dvc_stages(Path(options.get("cwd", PROJECT_ROOT)) / "dvc.yaml")
    if stage not in stages:
        raise ValueError(f"stage {stage!r}: not in dvc.yaml (stages: {', '.join(stages) or 'none yet'})")
    return submit_command([str(VENV_BIN / "dvc"), "repro", stage], **{"name": f"upvla-{stage}", **options})


def submit_pipeline(**options: Any) -> ProjectSlurmJob:
    """Run the whole pipeline, `dvc repro`, as one job (options as submit_command's)."""
    return submit_command([str(VENV_BIN / "dvc"), "repro"], **{"name": "upvla-pipeline", **options})


def submit_ray_cluster(command: Sequence[str], *, resources: WorkerResources, log_dir: str | Path,
                       name: str | None = None, begin: datetime | str | None = None,
                       cwd: str | Path = PROJECT_ROOT) -> ProjectSlurmJob:
    """Start a Ray cluster on the job's allocation (one Ray node per task) and run `command` as its driver.

    `.results()` is one value per task: task 0's RayClusterSummary, then None for each worker.
    """
    if not command:
        raise ValueError("command: empty; give the Ray driver to run, e.g. ['python', 'workflows/ablations.py']")
    return submit_function(run_ray_node, list(command), str(cwd), resources=resources, log_dir=log_dir,
                           name=name or "upvla-ray", begin=begin)


def dvc_stages(dvc_file: Path = PROJECT_ROOT / "dvc.yaml") -> list[str]:
    """The stage names of dvc.yaml, in order."""
    if not dvc_file.is_file():
        raise ValueError(f"{dvc_file}: no such file; stages are defined in the project's dvc.yaml")
    return list((yaml.safe_load(dvc_file.read_text()) or {}).get("stages") or {})


def _squeue_states(ids: set[str]) -> dict[str, dict[str, str]]:
    command = ["squeue", "--states=all", "--noheader", "--format=%i|%T|%r|%N", f"--jobs={','.join(sorted(ids))}"]
    # exit status 1 with no output means none of the ids is known any more (they fall to sacct)
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode not in (0, 1):
        logger.warning("squeue failed (%s); job states may be stale", out.stderr.strip())
    states = {}
    for line in out.stdout.splitlines():
        job_id, state, reason, nodes = line.strip().split("|", 3)
        states[job_id] = {"JobID": job_id, "State": state, "Reason": reason, "NodeList": nodes}
    return states


def _sacct_states(ids: set[str], read_info: Callable[[str], dict[str, dict[str, str]]]) -> dict[str, dict[str, str]]:
    command = ["sacct", "--format=JobID,State,NodeList", "--parsable2", *[f"--jobs={i}" for i in sorted(ids)]]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    return read_info(out.stdout) if out.returncode == 0 else {}


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one sub-command per kind of job, each with the resource and scheduling flags."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default=str(PROJECT_ROOT / "params.yaml"), help="parameter file (slurm: section)")
    common.add_argument("--profile", default=None, help="profile in profiles/ (e.g. paper) or a YAML path")
    common.add_argument("--partition", help="SLURM partition (default: slurm.partition)")
    common.add_argument("--nodes", type=int, help="nodes (default: slurm.nodes)")
    common.add_argument("--tasks-per-node", type=int, help="tasks per node (default: slurm.tasks_per_node)")
    common.add_argument("--cpus", type=int, help="CPU cores per task (default: slurm.cpus_per_task)")
    common.add_argument("--gpus", type=int, help="GPUs per node (default: slurm.gpus_per_node)")
    common.add_argument("--mem", type=float, help="memory per node, GiB (default: slurm.mem_gb)")
    common.add_argument("--time", type=int, help="wall-clock limit, minutes (default: slurm.time_min)")
    common.add_argument("--begin", help="start no earlier than: 2026-12-01T02:00, now+2hours, tomorrow, 22:00")
    common.add_argument("--name", help="SLURM job name")
    common.add_argument("--log-dir", help="parent of the job folders (default: slurm.log_dir)")
    common.add_argument("--wait", action="store_true", help="wait for the job to end and print its result")
    parser = argparse.ArgumentParser(prog="python -m cluster.slurm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="{pipeline,stage,command,ray}")
    kinds.add_parser("pipeline", parents=[common], help="dvc repro: the whole pipeline")
    kinds.add_parser("stage", parents=[common], help="dvc repro STAGE").add_argument("stage")
    kinds.add_parser("command", parents=[common], help="any command, given after --")
    kinds.add_parser("ray", parents=[common], help="a Ray cluster over the allocation; the driver after --")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Submit one job; print its id and folder (and, with --wait, its result). Exit 2 on bad input."""
    from components.core.config import ConfigError, load_config

    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    args = build_parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    try:
        slurm = load_config(args.params, profile=args.profile).slurm
        resources = _resources_from_args(WorkerResources.from_config(slurm), args)
        job = _submit(args, command, resources, log_dir=PROJECT_ROOT / (args.log_dir or slurm.log_dir))
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except (ValueError, SlurmUnavailableError, SlurmSubmissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"submitted job {job.job_id} ({args.kind}); folder {job.paths.folder}")
    if not args.wait:
        return 0
    try:
        results = job.results()
    except Exception as err:  # the job's own exception, re-raised here by submitit: report, don't trace back
        print(f"job {job.job_id} failed: {err}", file=sys.stderr)
        return 1
    for result in results:
        print(result)
    return 0


def _resources_from_args(base: WorkerResources, args: argparse.Namespace) -> WorkerResources:
    flags = {"partition": args.partition, "nodes": args.nodes, "tasks_per_node": args.tasks_per_node,
             "cpus_per_task": args.cpus, "gpus_per_node": args.gpus, "mem_gb": args.mem, "time_min": args.time}
    return dataclasses.replace(base, **{k: v for k, v in flags.items() if v is not None})


def _submit(args: argparse.Namespace, command: list[str], resources: WorkerResources,
            log_dir: Path) -> ProjectSlurmJob:
    options = {"resources": resources, "log_dir": log_dir, "begin": args.begin}
    if args.name:
        options["name"] = args.name
    if args.kind in ("command", "ray") and not command:
        raise ValueError(f"{args.kind}: give the command after --, e.g. -- python -m workflows.ablations")
    if args.kind == "pipeline":
        return submit_pipeline(**options)
    if args.kind == "stage":
        return submit_stage(args.stage, **options)
    submit = submit_command if args.kind == "command" else submit_ray_cluster
    return submit(command, **options)


if __name__ == "__main__":
    raise SystemExit(main())

"""A Ray cluster spanning one SLURM allocation, and a driver command run on it.

`run_ray_node` is the body of every task of a Ray-on-SLURM job (`cluster.slurm.submit_ray_cluster`
submits it; srun starts one task per node). Task 0 starts the head on the first node, waits until
every other task has joined as a worker, runs the driver command with `RAY_ADDRESS` pointing at the
head, then stops the head. The other tasks start a worker and leave once the driver is done.

The tasks meet through files in the job's folder, which submitit already requires to be on a
shared file system: task 0 writes the cluster's token (mode 0600) and the head's address, and a
`done` marker when the driver has finished (or failed), so no worker waits for a head that is gone.
Each node keeps Ray's sessions, sockets and logs in a private folder on its local disk,
`$RAY_TMPDIR` (default /tmp) `/ray-<job id>-<task>-*`, removed when the job succeeds and kept
for debugging when it fails; `ray start`'s own output is `ray_node_<task>.log` in the job folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.commands import PROJECT_ROOT, CommandFailedError
from cluster.ray_node import RayNodeError, ray_env, start_head, start_worker, stop_node, write_auth_token

JOIN_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class RayClusterSummary:
    """What task 0 of a Ray-on-SLURM job returns once its driver has succeeded."""

    # Ray nodes that had joined when the driver started (one per SLURM task)
    nodes: int
    # CPUs of the whole Ray cluster
    cpus: float
    # host:port of the head's GCS
    address: str
    command: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class _Rendezvous:
    """The files through which a job's tasks meet, in the job folder.

    Named per attempt (SLURM_RESTART_COUNT): a requeued job reuses its folder, and its workers must
    not join the address, or leave on the `done` marker, of the previous attempt's head.
    """

    folder: Path
    attempt: str

    @property
    def token(self) -> Path:
        return self.folder / f"ray_auth_token.{self.attempt}"

    @property
    def head(self) -> Path:
        return self.folder / f"ray_head.{self.attempt}.json"

    @property
    def done(self) -> Path:
        return self.folder / f"ray_done.{self.attempt}"


@dataclass(frozen=True)
class _NodeFiles:
    """Where this task's Ray node writes: `ray start`'s output (job folder) and Ray's own folder (local disk)."""

    log: Path
    temp_dir: Path


def run_ray_node(command: Sequence[str], cwd: str | Path = PROJECT_ROOT) -> RayClusterSummary | None:
    """Run this SLURM task's part of the Ray cluster: the head and the driver (task 0) or a worker.

    Args:
        command: the driver, run on the head node, e.g. ["python", "workflows/ablations.py"].
        cwd: the driver's working folder.

    Returns:
        Task 0: a RayClusterSummary. Other tasks: None.

    Raises:
        CommandFailedError: the driver exited non-zero.
        RayNodeError: a node did not start, or the workers did not all join within JOIN_TIMEOUT_S.
    """
    import submitit

    job = submitit.JobEnvironment()
    meeting = _Rendezvous(job.paths.folder, attempt=os.environ.get("SLURM_RESTART_COUNT", "0"))
    num_cpus = _task_cpus()
    # this process talks to the cluster too (node address, joined nodes): Ray reads these at import
    os.environ.update({k: v for k, v in ray_env(meeting.token, loopback=False).items() if k.startswith("RAY_")})
    node = _NodeFiles(log=job.paths.folder / f"ray_node_{job.global_rank}.log",
                      temp_dir=Path(tempfile.mkdtemp(prefix=f"ray-{job.job_id}-{job.global_rank}-",
                                                     dir=os.environ.get("RAY_TMPDIR", "/tmp"))))
    if job.global_rank == 0:
        summary = _run_head_and_driver(list(command), cwd, meeting, job.num_tasks, num_cpus, node)
    else:
        summary = _run_worker(meeting, num_cpus, node)
    shutil.rmtree(node.temp_dir, ignore_errors=True)  # only after success: a failure keeps Ray's logs
    return summary


def _run_head_and_driver(command: list[str], cwd: str | Path, meeting: _Rendezvous, num_nodes: int,
                         num_cpus: int, node: _NodeFiles) -> RayClusterSummary:
    import ray.util

    start = time.monotonic()
    try:
        env = ray_env(write_auth_token(meeting.token), loopback=False)
        head = start_head(node_ip=ray.util.get_node_ip_address(), num_cpus=num_cpus, env=env,
                          temp_dir=node.temp_dir, log_path=node.log)
        try:
            meeting.head.write_text(json.dumps({"address": head.gcs_address}))
            cpus = _wait_for_nodes(head.gcs_address, num_nodes)
            print(f"Ray cluster at {head.gcs_address}: {num_nodes} nodes, {cpus:g} CPUs; running {command}", flush=True)
            returncode = subprocess.run(command, cwd=cwd, env={**env, "RAY_ADDRESS": head.gcs_address}).returncode
        finally:
            stop_node(head)
    finally:
        meeting.done.touch()
    if returncode != 0:
        raise CommandFailedError(f"the Ray driver {' '.join(command)!r} exited with status {returncode}; "
                                 f"its output is in this job's log files in {meeting.folder}")
    return RayClusterSummary(nodes=num_nodes, cpus=cpus, address=head.gcs_address, command=tuple(command),
                             seconds=time.monotonic() - start)


def _run_worker(meeting: _Rendezvous, num_cpus: int, node: _NodeFiles) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not meeting.head.exists():
        if meeting.done.exists():
            return  # the head failed before it was up; task 0 reports why
        if time.monotonic() > deadline:
            raise RayNodeError(f"no Ray head address in {meeting.head} after {JOIN_TIMEOUT_S:.0f} s")
        time.sleep(1.0)
    address = json.loads(meeting.head.read_text())["address"]
    worker = start_worker(address, num_cpus=num_cpus, env=ray_env(meeting.token, loopback=False),
                          temp_dir=node.temp_dir, log_path=node.log)
    try:  # a worker whose head is gone exits on its own; `done` just makes that immediate
        while not meeting.done.exists() and worker.process.poll() is None:
            time.sleep(1.0)
    finally:
        stop_node(worker)


def _wait_for_nodes(address: str, count: int) -> float:
    """Block until `count` Ray nodes are alive; return the cluster's CPUs."""
    import ray

    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    try:
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while (alive := sum(node["Alive"] for node in ray.nodes())) < count:
            if time.monotonic() > deadline:
                raise RayNodeError(f"only {alive} of {count} Ray nodes joined {address} in {JOIN_TIMEOUT_S:.0f} s; "
                                   "see the ray_node_<task>.log files in the job folder")
            time.sleep(1.0)
        return ray.cluster_resources().get("CPU", 0.0)
    finally:
        ray.shutdown()


def _task_cpus() -> int:
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if not cpus:
        raise RayNodeError("SLURM_CPUS_PER_TASK is not set: submit Ray-on-SLURM jobs with cpus_per_task "
                           "(cluster.slurm.submit_ray_cluster does)")
    return int(cpus)

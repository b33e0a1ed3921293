"""What a job or a Ray worker asks the scheduler for, in one typed value.

`WorkerResources` is written once (from `params.yaml`'s `slurm:` section, or in code) and converted
for each consumer: submitit/`sbatch` parameters for a SLURM job, `ray.remote(...)` options for a
task or actor, and a Ray Train `ScalingConfig`. One value, three spellings, so a job shape never
drifts between the scheduler and the work it runs.

    from cluster.resources import WorkerResources
    res = WorkerResources(nodes=2, tasks_per_node=1, cpus_per_task=16, gpus_per_node=4, mem_gb=128)
    res.to_submitit()        # {'nodes': 2, 'ntasks_per_node': 1, 'cpus_per_task': 16, 'gpus_per_node': 4, ...}
    res.to_ray_remote()      # {'num_cpus': 16, 'num_gpus': 4.0, 'memory': 137438953472}
    res.to_scaling_config()  # ScalingConfig(num_workers=2, use_gpu=True, resources_per_worker={...})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.train import ScalingConfig

    from components.core.config import SlurmConfig

GIB = 1024**3


@dataclass(frozen=True)
class WorkerResources:
    """The shape of one job: nodes x tasks per node, each task with its CPUs; GPUs and memory per node.

    The defaults are the smallest job (one task on one CPU, no GPU, the scheduler's default memory
    and partition, one hour); a job that needs more says so.
    """

    # nodes of the allocation (a Ray-on-SLURM job runs the head on the first, a worker on each other)
    nodes: int = 1
    # processes per node (SLURM tasks; Ray Train workers per node)
    tasks_per_node: int = 1
    # CPU cores per task
    cpus_per_task: int = 1
    # GPUs per node, shared evenly by the node's tasks
    gpus_per_node: int = 0
    # memory per node in GiB; None = the scheduler's default (SLURM: DefMemPerCPU/Node; Ray: no reservation)
    mem_gb: float | None = None
    # wall-clock limit of the job, minutes
    time_min: int = 60
    # SLURM partition; None = the cluster's default partition
    partition: str | None = None

    def __post_init__(self) -> None:
        for name in ("nodes", "tasks_per_node", "cpus_per_task", "time_min"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        if isinstance(self.gpus_per_node, bool) or not isinstance(self.gpus_per_node, int) or self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node: must be an integer >= 0, got {self.gpus_per_node!r}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise ValueError(f"mem_gb: must be > 0 (or None for the scheduler's default), got {self.mem_gb!r}")
        if self.partition is not None and not self.partition.strip():
            raise ValueError("partition: must be a partition name (or None for the default), got ''")

    @classmethod
    def from_config(cls, cfg: SlurmConfig) -> WorkerResources:
        """The job shape of `params.yaml`'s `slurm:` section."""
        return cls(nodes=cfg.nodes, tasks_per_node=cfg.tasks_per_node, cpus_per_task=cfg.cpus_per_task,
                   gpus_per_node=cfg.gpus_per_node, mem_gb=cfg.mem_gb, time_min=cfg.time_min,
                   partition=cfg.partition)

    @property
    def num_tasks(self) -> int:
        """Tasks in the whole job (Ray Train workers, submitit results)."""
        return self.nodes * self.tasks_per_node

    @property
    def gpus_per_task(self) -> float:
        """GPUs of one task; fractional when a node's tasks share fewer GPUs than there are tasks."""
        return self.gpus_per_node / self.tasks_per_node

    @property
    def mem_bytes_per_task(self) -> int | None:
        """Memory of one task in bytes, or None when the job takes the scheduler's default."""
        if self.mem_gb is None:
            return None
        return int(self.mem_gb * GIB / self.tasks_per_node)

    def to_submitit(self) -> dict[str, Any]:
        """Keyword arguments of `submitit.SlurmExecutor.update_parameters` (sbatch's own option names).

        Zero GPUs and the default memory/partition are left out rather than written as `--gpus-per-node=0`,
        which clusters without GPU gres reject.
        """
        params: dict[str, Any] = {"nodes": self.nodes, "ntasks_per_node": self.tasks_per_node,
                                  "cpus_per_task": self.cpus_per_task, "time": self.time_min}
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb * 1024)}M"  # sbatch's M is MiB, so any fractional GiB is exact
        if self.partition is not None:
            params["partition"] = self.partition
        return params

    def to_ray_remote(self) -> dict[str, Any]:
        """Options of `ray.remote(...)` / `.options(...)` for one task of this shape."""
        options: dict[str, Any] = {"num_cpus": self.cpus_per_task, "num_gpus": self.gpus_per_task}
        if self.mem_bytes_per_task is not None:
            options["memory"] = self.mem_bytes_per_task
        return options

    def to_scaling_config(self) -> ScalingConfig:
        """A Ray Train `ScalingConfig`: one training worker per task, each with its task's CPUs/GPUs."""
        from ray.train import ScalingConfig  # ray.train takes seconds to import; only trainers need it

        per_worker: dict[str, float] = {"CPU": self.cpus_per_task}
        if self.gpus_per_node:
            per_worker["GPU"] = self.gpus_per_task
        return ScalingConfig(num_workers=self.num_tasks, use_gpu=self.gpus_per_node > 0,
                             resources_per_worker=per_worker)

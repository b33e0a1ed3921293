"""WorkerResources: one job shape, converted consistently for SLURM, ray.remote and Ray Train."""

from __future__ import annotations

import dataclasses

import pytest

from cluster.resources import GIB, WorkerResources
from components.core.config import load_config
from tests.conftest import PROJECT_ROOT


def test_a_multi_gpu_shape_converts_the_same_way_for_every_consumer():
    res = WorkerResources(nodes=2, tasks_per_node=4, cpus_per_task=8, gpus_per_node=4, mem_gb=256, time_min=2880,
                          partition="gpu")
    assert res.to_submitit() == {"nodes": 2, "ntasks_per_node": 4, "cpus_per_task": 8, "time": 2880,
                                 "gpus_per_node": 4, "mem": "262144M", "partition": "gpu"}
    assert res.to_ray_remote() == {"num_cpus": 8, "num_gpus": 1.0, "memory": 64 * GIB}
    scaling = res.to_scaling_config()
    assert scaling.num_workers == 8 and scaling.use_gpu
    assert scaling.resources_per_worker == {"CPU": 8, "GPU": 1.0}


def test_cpu_only_defaults_leave_out_what_the_scheduler_decides():
    res = WorkerResources()
    # no --gpus-per-node=0 (rejected by clusters without GPU gres), no --mem, no --partition
    assert res.to_submitit() == {"nodes": 1, "ntasks_per_node": 1, "cpus_per_task": 1, "time": 60}
    assert res.to_ray_remote() == {"num_cpus": 1, "num_gpus": 0.0}
    scaling = res.to_scaling_config()
    assert scaling.num_workers == 1 and not scaling.use_gpu and scaling.resources_per_worker == {"CPU": 1}


def test_fractional_memory_is_exact_in_sbatch_units():
    assert WorkerResources(mem_gb=0.5).to_submitit()["mem"] == "512M"


@pytest.mark.parametrize("field, value", [("nodes", 0), ("cpus_per_task", 0), ("tasks_per_node", 1.5),
                                          ("gpus_per_node", -1), ("mem_gb", 0), ("time_min", 0),
                                          ("partition", " "), ("nodes", True)])
def test_an_impossible_shape_is_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        WorkerResources(**{field: value})


@pytest.mark.parametrize("profile", [None, "paper"])
def test_the_params_slurm_section_is_a_valid_shape(profile):
    cfg = load_config(PROJECT_ROOT / "params.yaml", profile=profile).slurm
    res = WorkerResources.from_config(cfg)
    assert {f.name: getattr(res, f.name) for f in dataclasses.fields(res)} == {
        "nodes": cfg.nodes, "tasks_per_node": cfg.tasks_per_node, "cpus_per_task": cfg.cpus_per_task,
        "gpus_per_node": cfg.gpus_per_node, "mem_gb": cfg.mem_gb, "time_min": cfg.time_min,
        "partition": cfg.partition}
    if profile == "paper":  # one node of the paper's 4 x A800
        assert res.gpus_per_node == 4 and res.to_scaling_config().use_gpu

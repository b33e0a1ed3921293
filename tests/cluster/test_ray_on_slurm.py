"""A Ray cluster inside a SLURM allocation (head + worker, one per task) runs a driver that sees both nodes."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from cluster.ray_on_slurm import RayClusterSummary
from cluster.resources import WorkerResources
from cluster.slurm import submit_ray_cluster
from tests.fixtures.local_slurm import wait_state

# a job that hangs must fail the test, not the whole session
pytestmark = pytest.mark.timeout(240)

# Spreads 4 one-CPU tasks over the cluster and reports what it saw.
DRIVER = """
import json, sys, time
import ray

ray.init()

@ray.remote(num_cpus=1)
def node_of_task():
    time.sleep(1.0)  # long enough that one node cannot run all four alone
    return ray.get_runtime_context().get_node_id()

alive = [n for n in ray.nodes() if n["Alive"]]
used = set(ray.get([node_of_task.remote() for _ in range(4)]))
json.dump({"nodes": len(alive), "cpus": ray.cluster_resources()["CPU"], "nodes_used": len(used)},
          open(sys.argv[1], "w"))
"""


@pytest.mark.slurm
def test_a_driver_submitted_to_ray_on_slurm_sees_head_and_worker(local_slurm, tmp_path):
    driver, seen = tmp_path / "driver.py", tmp_path / "seen.json"
    driver.write_text(DRIVER)
    # one node here, so two tasks on it: task 0 is the head, task 1 a worker (a second srun task)
    job = submit_ray_cluster(["python", str(driver), str(seen)], log_dir=tmp_path / "logs",
                             resources=WorkerResources(tasks_per_node=2, cpus_per_task=1, mem_gb=4, time_min=10))
    head, worker = job.results()
    assert isinstance(head, RayClusterSummary) and worker is None
    assert (head.nodes, head.cpus) == (2, 2.0)
    assert json.loads(seen.read_text()) == {"nodes": 2, "cpus": 2.0, "nodes_used": 2}
    assert oct((job.paths.folder / "ray_auth_token.0").stat().st_mode & 0o777) == "0o600"


@pytest.mark.slurm
def test_a_failing_driver_fails_the_job_releases_the_worker_and_keeps_the_head_logs(local_slurm, tmp_path,
                                                                                     monkeypatch):
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-"))  # short: Ray's sockets live under it (107-byte path limit)
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))  # sbatch exports it to the job
    try:
        job = submit_ray_cluster([sys.executable, "-c", "import ray; ray.init(); raise SystemExit(4)"],
                                 log_dir=tmp_path, resources=WorkerResources(tasks_per_node=2, cpus_per_task=1,
                                                                             mem_gb=4, time_min=10))
        with pytest.raises(Exception, match="the Ray driver .* exited with status 4"):
            job.results()
        wait_state(job, "FAILED")
        kept = [p.name.rsplit("-", 1)[0] for p in ray_tmp.iterdir()]
        assert kept == [f"ray-{job.job_id}-0"]  # the head's Ray logs stay for debugging; the worker's are gone
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

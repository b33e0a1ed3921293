"""components/core/ray_runtime.py: the local Ray a stage starts when no RAY_ADDRESS is set."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import PROJECT_ROOT

# In a fresh interpreter: the test session's own Ray (conftest.ray_session) would make ray_connection join it.
PROBE = """
import json, logging
import ray
from components.core.ray_runtime import _PG_CLEANER_LOGGER, ray_connection

def level():
    return logging.getLogger(_PG_CLEANER_LOGGER).level

@ray.remote(num_cpus=0)
class Probe:
    def level(self):
        return level()

with ray_connection(1):
    task = ray.get(ray.remote(num_cpus=0)(level).remote())
    detached = Probe.options(lifetime="detached").remote()  # how Ray Train starts its PlacementGroupCleaner
    actor = ray.get(detached.level.remote())
    ray.kill(detached)
print(json.dumps({"task": task, "detached_actor": actor, "error": logging.ERROR}))
"""


def test_local_ray_silences_the_placement_group_cleaner_in_tasks_and_detached_actors():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    levels = json.loads(out.stdout.strip().splitlines()[-1])
    assert levels["task"] == levels["detached_actor"] == levels["error"]


# Workers run libgomp's own wait unless the user chose one (components/core/threads.py): the runtime_env
# ray_connection gives the job adds no setting of its own.
THREADS_PROBE = """
import json, os
import ray
from components.core.ray_runtime import ray_connection

def wait_settings():
    return {k: os.environ.get(k) for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}

@ray.remote(num_cpus=0)
class Probe:
    def settings(self):
        return wait_settings()

with ray_connection(1):
    task = ray.get(ray.remote(num_cpus=0)(wait_settings).remote())
    actor = Probe.remote()  # Ray Train's workers are actors
    in_actor = ray.get(actor.settings.remote())
print(json.dumps({"driver": wait_settings(), "task": task, "actor": in_actor}))
"""


def test_local_ray_workers_get_no_thread_wait_setting_the_user_did_not_choose():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", THREADS_PROBE], cwd=PROJECT_ROOT, env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    unset = {"GOMP_SPINCOUNT": None, "OMP_WAIT_POLICY": None}
    assert seen == {"driver": unset, "task": unset, "actor": unset}


def test_a_submitted_jobs_own_env_vars_are_not_named_again(monkeypatch):
    # Ray refuses a driver runtime_env naming a variable the `ray job submit` runtime_env already sets
    from components.core.entry import SUBMITTED_JOB_CONFIG
    from components.core.entry import submitted_job_env_vars as _submitted_job_env_vars

    monkeypatch.delenv(SUBMITTED_JOB_CONFIG, raising=False)
    assert _submitted_job_env_vars() == {}
    config = {"runtime_env": {"working_dir": "gcs://x.zip", "env_vars": {"GOMP_SPINCOUNT": "7"}}}
    monkeypatch.setenv(SUBMITTED_JOB_CONFIG, json.dumps(config))
    assert _submitted_job_env_vars() == {"GOMP_SPINCOUNT": "7"}

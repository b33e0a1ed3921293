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

"""`ray job submit --working-dir .` against a real local Ray head (the `local_ray_head` fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from cluster.ray_node import write_auth_token
from components.core.config import load_config, to_dict
from tests.conftest import PROJECT_ROOT


def test_ray_job_submit_runs_a_project_command_on_the_head(local_ray_head):
    out = subprocess.run(["ray", "job", "submit", "--working-dir", ".", "--", "python", "-m", "components.core.config"],
                         cwd=PROJECT_ROOT, env=local_ray_head.env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout + out.stderr
    # the job printed the resolved config: the one this checkout resolves to (run from its uploaded copy)
    printed = out.stdout[out.stdout.index("experiment:"):out.stdout.index("presets:")]
    assert yaml.safe_load(printed) == {k: v for k, v in to_dict(load_config()).items() if k != "presets"}


# what a job's driver sees: Ray's OMP_NUM_THREADS, then torch's threads after the entry points' first call
THREADS_PROBE = ("import os; print('ray gave', os.environ.get('OMP_NUM_THREADS')); "
                 "from components.core.entry import prepare_environment; prepare_environment(); "
                 "import torch; print('torch threads', torch.get_num_threads())")


def submit_probe(env: dict[str, str], *options: str) -> str:
    out = subprocess.run(["ray", "job", "submit", "--working-dir", ".", *options, "--", "python", "-c", THREADS_PROBE],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_a_submitted_driver_runs_torch_on_every_core_unless_the_job_asks_for_one(local_ray_head):
    own_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    idle = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=own_env,
                          capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    # Ray's job supervisor reserves no CPU, so Ray gives it (and the driver it starts) one OpenMP thread; the
    # stages the driver runs itself (the ablation job's tokenizer fit) would run on one core
    out = submit_probe(local_ray_head.env)
    assert "ray gave 1" in out and f"torch threads {idle}" in out, out[-3000:]
    # one thread asked for in the job's runtime_env is kept
    one = submit_probe(local_ray_head.env, "--runtime-env-json", json.dumps({"env_vars": {"OMP_NUM_THREADS": "1"}}))
    assert "torch threads 1" in one


def test_the_head_refuses_a_client_with_another_token(local_ray_head, tmp_path):
    env = {**local_ray_head.env, "RAY_AUTH_TOKEN_PATH": str(write_auth_token(tmp_path / "other_token"))}
    out = subprocess.run(["ray", "job", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Invalid authentication token" in out.stderr

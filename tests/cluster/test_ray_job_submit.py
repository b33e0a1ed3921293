"""`ray job submit --working-dir .` against a real local Ray head (the `local_ray_head` fixture)."""

from __future__ import annotations

import subprocess

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


def test_the_head_refuses_a_client_with_another_token(local_ray_head, tmp_path):
    env = {**local_ray_head.env, "RAY_AUTH_TOKEN_PATH": str(write_auth_token(tmp_path / "other_token"))}
    out = subprocess.run(["ray", "job", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Invalid authentication token" in out.stderr

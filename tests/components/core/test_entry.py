"""components/core/entry.py: the environment every workflow entry point prepares before torch or Ray loads."""

from __future__ import annotations

import json
import os

import pytest

from components.core.entry import SUBMITTED_JOB_CONFIG, prepare_environment


def job_config(env_vars: dict[str, str]) -> str:
    return json.dumps({"runtime_env": {"working_dir": "gcs://x.zip", "env_vars": env_vars}})


@pytest.fixture
def clean_env(monkeypatch):
    for key in ("OMP_NUM_THREADS", SUBMITTED_JOB_CONFIG, "HF_HUB_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_a_submitted_jobs_driver_drops_the_one_thread_ray_gave_its_supervisor(clean_env):
    clean_env.setenv(SUBMITTED_JOB_CONFIG, job_config({}))
    clean_env.setenv("OMP_NUM_THREADS", "1")
    prepare_environment()
    assert "OMP_NUM_THREADS" not in os.environ


def test_a_thread_count_the_job_or_the_user_chose_is_kept(clean_env):
    clean_env.setenv(SUBMITTED_JOB_CONFIG, job_config({"OMP_NUM_THREADS": "1"}))  # named by the submitted job
    clean_env.setenv("OMP_NUM_THREADS", "1")
    prepare_environment()
    assert os.environ["OMP_NUM_THREADS"] == "1"
    clean_env.delenv(SUBMITTED_JOB_CONFIG)  # not a Ray job: the user's own setting
    prepare_environment()
    assert os.environ["OMP_NUM_THREADS"] == "1"
    clean_env.setenv(SUBMITTED_JOB_CONFIG, job_config({}))  # a job whose supervisor reserved CPUs
    clean_env.setenv("OMP_NUM_THREADS", "4")
    prepare_environment()
    assert os.environ["OMP_NUM_THREADS"] == "4"


def test_the_defaults_never_override_the_users_values(clean_env):
    clean_env.setenv("HF_HUB_OFFLINE", "0")
    prepare_environment()
    assert os.environ["HF_HUB_OFFLINE"] == "0" and os.environ["TRANSFORMERS_OFFLINE"]

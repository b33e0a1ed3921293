"""components/core/threads.py: torch's OpenMP threads spin briefly before sleeping, in every stage process."""

from __future__ import annotations

import os
import subprocess
import sys

from components.core.threads import WAIT_VARIABLES, configure_threads, thread_environment
from tests.conftest import PROJECT_ROOT


def clean_environment() -> dict[str, str]:
    """This process's environment without any OpenMP wait setting (a test session may have set one)."""
    return {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}


def libgomp_settings(code: str, env: dict[str, str]) -> str:
    """What libgomp reports it read when torch loads in a fresh interpreter running `code` (OMP_DISPLAY_ENV)."""
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env={**env, "OMP_DISPLAY_ENV": "VERBOSE"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OPENMP DISPLAY ENVIRONMENT" in out.stderr, f"torch did not load libgomp:\n{out.stderr[-3000:]}"
    return out.stderr


def test_the_default_is_a_short_spin_and_a_users_own_wait_setting_wins():
    assert thread_environment({}) == {"GOMP_SPINCOUNT": "500"}
    # GOMP_SPINCOUNT would override the spin count OMP_WAIT_POLICY implies: nothing is added to a user's choice
    assert thread_environment({"OMP_WAIT_POLICY": "ACTIVE", "HOME": "/x"}) == {"OMP_WAIT_POLICY": "ACTIVE"}
    assert thread_environment({"GOMP_SPINCOUNT": "infinite"}) == {"GOMP_SPINCOUNT": "infinite"}


def test_configure_threads_keeps_a_users_setting(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    configure_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "GOMP_SPINCOUNT" not in os.environ


def test_libgomp_reads_the_spin_count_the_tokenizer_stage_sets_before_torch_loads():
    # the tokenizer stage runs torch's 2-thread fit in its own process: its entry point must set the wait first
    report = libgomp_settings("import workflows.tokenizer, torch; torch.ones(2) + 1", clean_environment())
    assert "GOMP_SPINCOUNT = '500'" in report, report
    # without it libgomp spins 300000 times (the collapse under load): the check above can fail
    plain = libgomp_settings("import torch", clean_environment())
    assert "GOMP_SPINCOUNT = '300000'" in plain, plain

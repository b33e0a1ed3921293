"""Workflow fixtures: one ablation run submitted with `ray job submit` to a real local Ray head, shared by
the ablation test and the MLflow UI browser test (it is the slowest thing they need)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.core.config import TrackingConfig
from components.core.tracking import TrackingTarget, resolve_target
from tests.conftest import PROJECT_ROOT
from tests.fixtures.pipeline_data import write_raw

# full and no_mmu_condition share one stage-1 model; no_bridge_pretrain needs none
ABLATION_PRESETS = ("full", "no_mmu_condition", "no_bridge_pretrain")


@dataclass(frozen=True)
class AblationJob:
    """The finished job: its output folder (= --root), MLflow store, and `ray job submit`'s output."""

    root: Path
    target: TrackingTarget
    output: str
    wall_s: float


@pytest.fixture(scope="session")
def ablation_job(local_ray_head, tmp_path_factory) -> AblationJob:
    """`ray job submit --working-dir . -- python workflows/ablations.py --profile smoke ...`, run once."""
    root = tmp_path_factory.mktemp("ablations")
    write_raw(root / "raw")
    # the script form README.md documents (`-m workflows.ablations` works the same)
    command = ["ray", "job", "submit", "--working-dir", ".", "--", "python", "workflows/ablations.py",
               "--profile", "smoke", "--presets", ",".join(ABLATION_PRESETS), "--root", str(root), "--raw", "raw",
               "--task-trials", "1", "--trial-tasks", "turn_on_led", "--set", "evaluate.ep_len=30"]
    start = time.perf_counter()
    out = subprocess.run(command, cwd=PROJECT_ROOT, env=local_ray_head.env, capture_output=True, text=True,
                         timeout=900)
    output = out.stdout + out.stderr
    assert out.returncode == 0, output[-6000:]
    target = resolve_target(TrackingConfig("upvla", "mlflow.db", "mlartifacts"), root)
    return AblationJob(root, target, output, time.perf_counter() - start)

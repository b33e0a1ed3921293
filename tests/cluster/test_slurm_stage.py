"""A real project stage as a SLURM job: `submit_stage` runs `dvc repro tokenizer` on the local SLURM
(tests/fixtures/local_slurm.py), which runs the real ingest and tokenizer stages on fixture data with the
smoke profile, in a scratch DVC project that has the checkout's stage definitions and code."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from cluster.resources import WorkerResources
from cluster.slurm import submit_stage
from components.core.config import load_config, to_dict
from tests.conftest import PROJECT_ROOT
from tests.fixtures.pipeline_data import write_raw

pytestmark = pytest.mark.timeout(420)
CODE = ("components", "workflows", "model", "envs")
STAGES = ("ingest", "tokenizer")


def dvc_project(root):
    """git + DVC project: params.yaml = the resolved smoke profile, dvc.yaml = the checkout's data stages."""
    root.mkdir()
    for folder in CODE:  # the stages' code deps (the job imports the same code, installed editable)
        shutil.copytree(PROJECT_ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "params.yaml").write_text(yaml.safe_dump(to_dict(load_config(profile="smoke")), sort_keys=False))
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {name: stages[name] for name in STAGES}}))
    write_raw(root / "data" / "raw")
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=root, check=True, env={"PATH": f"{PROJECT_ROOT / '.venv' / 'bin'}:/usr/bin:/bin"})
    return root


@pytest.mark.slurm
def test_a_slurm_job_runs_the_tokenizer_stage_through_dvc(local_slurm, tmp_path):
    project = dvc_project(tmp_path / "project")
    job = submit_stage("tokenizer", resources=WorkerResources(cpus_per_task=2, mem_gb=4, time_min=10),
                       log_dir=tmp_path / "logs", cwd=project)
    assert job.result().returncode == 0, job.stderr()
    metrics = json.loads((project / "metrics" / "tokenizer.json").read_text())
    assert metrics["steps"] == load_config(profile="smoke").tokenizer.steps  # the smoke profile's, from params.yaml
    assert (project / "artifacts" / "vq" / "vq.safetensors").is_file()
    assert (project / "artifacts" / "text_tokenizer" / "tokenizer.json").is_file()
    assert json.loads((project / "metrics" / "ingest.json").read_text())["described_frames"] > 0
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(STAGES)  # dvc ran the stage and the one it depends on, and recorded both
    assert "tokenizer" in job.stdout() + job.stderr()

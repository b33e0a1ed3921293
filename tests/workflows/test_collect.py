"""The collect stage's entry point and DVC wiring, and its determinism: the same seed gives the same bytes,
whatever the number of worker processes."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import yaml
from mlflow.tracking import MlflowClient

from components.collection.collect import collect_datasets
from components.core.config import load_config
from tests.conftest import PROJECT_ROOT

# one 2-task episode per split, one Bridge video and two LLaVA images: a minute on 2 cores
TINY = {"train_scenes": ["B"], "val_scenes": ["D"], "episodes_per_scene": 1, "val_episodes_per_scene": 1,
        "tasks_per_episode": 2, "bridge_videos": 1, "llava_images": 2}


def digests(root):
    """Relative path -> SHA-256 of every file under `root`."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_dvc_stage_declares_code_params_and_outputs():
    stage = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]["collect"]
    assert stage["cmd"] == "python -m workflows.collect"
    assert {"components/collection", "envs/experts", "envs/playtable"} <= set(stage["deps"])  # all: test_stage_deps
    assert stage["params"] == ["collect", "env"] and stage["outs"] == ["data/raw"]
    assert stage["metrics"] == [{"metrics/collect.json": {"cache": False}}]


def test_main_collects_logs_and_is_deterministic(tmp_path, monkeypatch):
    from workflows import collect

    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    overrides = [f"collect.{k}={json.dumps(v)}" for k, v in TINY.items()] + ["collect.num_workers=2",
                                                                              f"tracking.artifacts={tmp_path / 'art'}"]
    args = [a for o in overrides for a in ("--set", o)]
    metrics = tmp_path / "collect.json"
    assert collect.main([*args, "--out", str(tmp_path / "raw"), "--metrics", str(metrics)]) == 0
    values = json.loads(metrics.read_text())
    assert values["episodes_training"] == values["episodes_validation"] == 1 and values["bridge_videos"] == 1
    client = MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("upvla-pipeline").experiment_id])
    assert run.info.run_name == "collect-full-s0" and run.data.metrics["collect/frames_training"] > 0
    assert [a.path for a in client.list_artifacts(run.info.run_id, "collect")] == ["collect/sample_frames.png"]

    again = tmp_path / "again"
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in TINY.items()} | {"num_workers": 1}
    collect_datasets(dataclasses.replace(load_config().collect, **changes), again)
    assert digests(again) == digests(tmp_path / "raw")

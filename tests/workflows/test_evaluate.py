"""`python -m workflows.evaluate` end to end on a tiny real checkpoint: outputs, MLflow, and identical
rollouts whatever the actors and wherever the model runs.

The checkpoint has random weights, so every chain fails its first subtask; the rollout videos are the
sharp check: a GIF holds every 4th camera frame and the decoded predicted frame, so two byte-identical
GIFs mean the same actions, step for step.
"""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from components.core.config import TrackingConfig
from components.core.tracking import find_runs, resolve_target, start_run
from components.evaluation.videos import CAPTION_HEIGHT, LABEL_HEIGHT
from tests.conftest import PROJECT_ROOT
from tests.fixtures.tiny_policy import write_tiny_checkpoint
from workflows.evaluate import main

EP_LEN = 9


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A project folder (cwd of the CLI runs) with its own MLflow store, and the checkpoint logged in a run."""
    root = tmp_path_factory.mktemp("project")
    checkpoint = write_tiny_checkpoint(root / "model")
    target = resolve_target(TrackingConfig("upvla", "mlflow.db", "mlartifacts"), root)
    with start_run(target, "upvla-pipeline", "tune-full-s0") as run:
        run.log_artifact(checkpoint, "model")
    return root, checkpoint, target, run.run_id


def evaluate(store, monkeypatch, out: str, *flags: str, **settings) -> dict:
    root, _, target, _ = store
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", target.uri)
    monkeypatch.setattr("components.core.checkpoint_refs.cache_root", lambda: root / "cache")
    values = {"num_sequences": 2, "ep_len": EP_LEN, "num_videos": 2, "num_workers": 2, **settings}
    overrides = [f"--set=evaluate.{key}={value}" for key, value in values.items()]
    assert main(["--params", str(PROJECT_ROOT / "params.yaml"), "--out", out, "--metrics", f"{out}/eval.json",
                 *overrides, *flags]) == 0
    return {p.name: p.read_bytes() for p in sorted((root / out / "videos").glob("*.gif"))}


@pytest.fixture(scope="module")
def local_run(ray_session, store):
    """The CLI on the checkpoint folder: 2 actors, the model in each (videos by name)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return evaluate(store, monkeypatch, "local", "--checkpoint", str(store[1]), inference="local")


def test_cli_writes_calvins_outputs_videos_and_mlflow(store, local_run):
    root, checkpoint, target, _ = store
    results = json.loads((root / "local" / "results.json").read_text())
    assert list(results) == [str(checkpoint)]
    assert results[str(checkpoint)]["avg_seq_len"] == 0.0  # random weights solve nothing
    metrics = json.loads((root / "local" / "eval.json").read_text())
    assert metrics["num_chains"] == 2 and set(metrics["chain_sr"]) == {"1", "2", "3", "4", "5"}
    assert list(local_run) == ["chain_0000.gif", "chain_0001.gif"]
    with Image.open(root / "local" / "videos" / "chain_0000.gif") as gif:
        # camera | prediction, their names above, the instruction below
        assert gif.n_frames == -(-EP_LEN // 4) and gif.size == (2 * 200 + 2, LABEL_HEIGHT + 200 + CAPTION_HEIGHT)
    [run] = find_runs(target, "upvla-pipeline", "attributes.run_name = 'evaluate-full-s0'")
    assert run.data.metrics["avg_seq_len"] == 0.0 and "chain_sr_5" in run.data.metrics
    assert any(key.startswith("task_sr/") for key in run.data.metrics)
    assert run.data.params["evaluate.num_sequences"] == "2" and run.data.tags["checkpoint"] == str(checkpoint)
    inputs = {d.dataset.name: {t.key: t.value for t in d.tags}["mlflow.data.context"]
              for d in run.inputs.dataset_inputs}
    assert inputs == {f"checkpoint {checkpoint}": "policy", "calvin-chains-playtable-D-2": "evaluation"}
    client = MlflowClient(target.uri)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "plots", "videos"} <= artifacts
    assert len(client.list_artifacts(run.info.run_id, "videos")) == 2


def test_same_rollouts_with_a_shared_model_one_actor_or_two_and_a_run_id(store, local_run, monkeypatch):
    root, checkpoint, _, run_id = store
    one_actor_batched = evaluate(store, monkeypatch, "one", "--checkpoint", str(checkpoint), inference="local",
                                 num_workers=1, envs_per_worker=2)
    shared = evaluate(store, monkeypatch, "shared", "--run-id", run_id, inference="shared", cpus_per_worker=0.5)
    assert len(local_run) == 2 and one_actor_batched == local_run and shared == local_run
    assert list(json.loads((root / "shared" / "results.json").read_text())) == [run_id]

"""The `pretrain` stage function on real Ray Train, with a worker killed mid-run, logging into a real MLflow store;
afterwards Ctrl-C raises KeyboardInterrupt again (Ray Train's SIGINT handler is not left behind).

One Ray Train run (~40-60 s on 2 idle cores: worker-group start, the kill, the restart) covers the stage
function: TorchTrainer + gloo, checkpoints reported to Ray storage, FailureConfig restarting the worker
group from the latest checkpoint, the exported model folder, per-step metrics, grids and the model in MLflow.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import psutil

from components.core.tracking import list_run_artifacts, make_client, start_run
from components.training.train import pretrain
from model.vla import VLAModel
from tests.fixtures.training import tiny_config, tiny_inputs


def train_workers() -> list[psutil.Process]:
    """This test session's Ray Train worker processes (descendants of this process: never another session's)."""
    return [p for p in psutil.Process().children(recursive=True)
            if any("RayTrainWorker" in part for part in _cmdline(p))]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def registered_checkpoint(storage) -> bool:
    """Ray's controller has registered a checkpoint (its snapshot names one): a restart will restore it.

    A checkpoint folder appearing in storage is not enough: the upload may still be running, and a worker
    killed then restarts from nothing.
    """
    for snapshot in storage.glob("*/checkpoint_manager_snapshot.json"):
        try:
            if json.loads(snapshot.read_text()).get("latest_checkpoint_result"):
                return True
        except ValueError:  # caught mid-write
            pass
    return False


def kill_worker_after_first_checkpoint(storage, killed: list[int], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if registered_checkpoint(storage):
            for worker in train_workers():
                worker.kill()
                killed.append(worker.pid)
            return
        time.sleep(0.05)


def test_a_worker_killed_mid_run_is_restarted_from_the_latest_checkpoint(pipeline_data, ray_session,
                                                                         tracking_target, tmp_path):
    steps = 40
    cfg = tiny_config("pretrain", steps=steps, **{"pretrain.checkpoint_every": 4, "pretrain.image_every": 20})
    storage, killed = tmp_path / "ray", []
    killer = threading.Thread(target=kill_worker_after_first_checkpoint, args=(storage, killed), daemon=True)
    killer.start()
    sigint_handler = signal.getsignal(signal.SIGINT)
    with start_run(tracking_target, "upvla-test", "pretrain-full-s0") as run:
        summary = pretrain(cfg, tiny_inputs(pipeline_data, None), tmp_path / "out", storage=storage, log=run)
    killer.join(timeout=1)
    assert signal.getsignal(signal.SIGINT) is sigint_handler  # Ray's abort-the-run handler is gone: Ctrl-C raises
    assert killed, "no Ray Train worker was found to kill"
    assert summary.steps == steps and 4 <= summary.resumed_from_step < steps  # restarted from a checkpoint
    assert summary.resumed_from_step % 4 == 0 and set(summary.final) >= {"loss", "pre", "mmu", "lr", "samples_per_s"}
    model = VLAModel.from_pretrained(summary.model_dir)  # the evaluate stage's input
    assert model.text_tokenizer is not None and not (tmp_path / "out" / "model" / "policy.json").exists()
    assert len(list((storage / summary.ray_run).glob("checkpoint_0*"))) == cfg.pretrain.keep_checkpoints

    client = make_client(tracking_target)
    history = client.get_metric_history(run.run_id, "pretrain/pre")
    assert {m.step for m in history} >= set(range(summary.resumed_from_step + 2, steps + 1, 2))
    assert {"pretrain/lr", "pretrain/samples_per_s", "pretrain/grad_norm", "pretrain/mmu"} <= set(
        client.get_run(run.run_id).data.metrics)
    frames = [path for path, _ in list_run_artifacts(tracking_target, run.run_id, "frames")]
    assert "frames/pretrain_step_000040.png" in frames
    assert "model/model.safetensors" in [p for p, _ in list_run_artifacts(tracking_target, run.run_id, "model")]

"""The training loop of both stages on the pipeline fixture data, one process (LocalSession), tiny model.

Ray Train, MLflow and a lost worker are covered by tests/workflows/test_train_stages.py.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from components.data.sampling import make_train_batches
from components.training.ema import EMA_FILE
from components.training.loop import train_worker
from components.training.session import LocalSession
from model.vla import VLAModel
from tests.conftest import PROJECT_ROOT
from tests.fixtures.training import tiny_config, tiny_inputs, tiny_job


def run_local(cfg, stage, inputs, folder) -> LocalSession:
    torch.set_num_threads(1)  # as the subprocess of the resume test: identical kernels, identical floats
    session = LocalSession(folder, keep=getattr(cfg, stage).keep_checkpoints)
    train_worker(tiny_job(cfg, stage, inputs), session)
    return session


def falls(reports, term: str, factor: float = 0.8) -> None:
    first, last = reports[0][term], min(r[term] for r in reports[-3:])
    assert last < factor * first, f"{term}: {first:.3f} -> {last:.3f}"


@pytest.fixture(scope="module")
def pretrained(pipeline_data, tmp_path_factory):
    cfg = tiny_config("pretrain", steps=30)
    session = run_local(cfg, "pretrain", tiny_inputs(pipeline_data, None), tmp_path_factory.mktemp("pretrain"))
    return session


def test_a_short_pretrain_lowers_prediction_and_understanding_losses(pretrained):
    reports = pretrained.reports
    assert [r["step"] for r in reports] == list(range(2, 31, 2))
    for term in ("pre", "mmu"):
        falls(reports, term)
    assert "act" not in reports[-1]  # lambda_act = 0 in stage 1: the term is not even computed
    assert reports[-1]["torch_threads"] == 1  # run_local's one thread: the thread guard has none to take away


def test_a_short_tune_from_stage_one_lowers_every_active_loss(pipeline_data, pretrained, tmp_path):
    init = pretrained.complete_checkpoints()[-1] / "model"
    # the full preset: L' prompt (CLIP tokens + description) on; clean input codes, so that its first prediction
    # loss compares with stage 1's below on equal inputs (the default's code noise raises it)
    cfg = tiny_config("tune", steps=30, **{"tune.code_noise": 0.0})
    session = run_local(cfg, "tune", tiny_inputs(pipeline_data, init), tmp_path)
    reports = session.reports
    falls(reports, "pre")
    falls(reports, "mmu")
    falls(reports, "act", 0.9)  # random fixture actions: the floor is their standardised variance (1) + BCE
    # it started from stage 1's weights: its first prediction loss is already below a fresh model's ln(1024)
    assert reports[0]["pre"] < pretrained.reports[0]["pre"]
    # the pose is standardised by the tune data's statistics, which the tuned checkpoint carries (stage 1,
    # without actions, keeps the identity)
    tuned = VLAModel.from_pretrained(session.complete_checkpoints()[-1] / "model")
    data = make_train_batches(cfg.tune, cfg.model, tokens_dir=pipeline_data.tokens,
                              ingested_dir=pipeline_data.ingested, text_tokenizer=tuned.text_tokenizer)
    mean, std = data.pose_stats()
    torch.testing.assert_close(tuned.action_mean, torch.from_numpy(mean))
    torch.testing.assert_close(tuned.action_std, torch.from_numpy(std))
    assert torch.equal(VLAModel.from_pretrained(init).action_std, torch.ones(6))


def test_a_proprio_tune_standardises_the_state_by_its_data_and_trains_the_encoder(pipeline_data, tmp_path):
    cfg = tiny_config("tune", steps=4, **{"model.proprio": True, "tune.init_from": "backbone"})
    session = run_local(cfg, "tune", tiny_inputs(pipeline_data, None), tmp_path)
    tuned = VLAModel.from_pretrained(session.complete_checkpoints()[-1] / "model")
    data = make_train_batches(cfg.tune, cfg.model, tokens_dir=pipeline_data.tokens,
                              ingested_dir=pipeline_data.ingested, text_tokenizer=tuned.text_tokenizer)
    mean, std = data.proprio_stats()
    torch.testing.assert_close(tuned.proprio.mean, torch.from_numpy(mean))
    torch.testing.assert_close(tuned.proprio.std, torch.from_numpy(std))
    assert tuned.proprio.mlp[2].weight.abs().sum() > 0  # left its zero start


def test_resume_after_a_kill_ends_with_the_parameters_of_an_uninterrupted_run(pipeline_data, tmp_path):
    steps = 24
    # the weight average and the code noise resume too
    cfg = tiny_config("pretrain", steps=steps, **{"pretrain.ema_decay": 0.9, "pretrain.code_noise": 0.3})
    inputs = tiny_inputs(pipeline_data, None)
    run_local(cfg, "pretrain", inputs, tmp_path / "straight")

    folder = tmp_path / "killed"
    cmd = [sys.executable, "-m", "tests.fixtures.training", str(folder), str(pipeline_data.tokens.parent), "pretrain",
           str(steps), "pretrain.ema_decay=0.9", "pretrain.code_noise=0.3"]
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    session = LocalSession(folder, keep=2)
    deadline = time.monotonic() + 240
    while not session.complete_checkpoints() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    _, err = proc.communicate()
    with session.latest_checkpoint() as latest:
        assert latest is not None, err.decode()[-2000:]
        killed_at = int(latest.name.split("_")[1])
    assert 0 < killed_at < steps, "the kill must land mid-run"

    resumed = run_local(cfg, "pretrain", inputs, folder)
    assert resumed.reports[0]["resumed_from_step"] == killed_at
    assert resumed.reports[0]["step"] == killed_at + 2  # the next checkpoint after the restored one
    final = f"checkpoint_{steps:08d}"
    for name in ("model/model.safetensors", "optimizer.safetensors", EMA_FILE):
        a, b = load_file(str(tmp_path / "straight" / final / name)), load_file(str(folder / final / name))
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_a_checkpoint_appears_under_its_name_only_once_fully_copied(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "state.json").write_text("{}")
    (scratch / "optimizer.safetensors").write_bytes(b"x" * 1000)
    session = LocalSession(tmp_path / "run", keep=2)
    (tmp_path / "run").mkdir()
    leftover = tmp_path / "run" / ".checkpoint_00000001.partial"  # what a kill during a copy leaves
    leftover.mkdir()
    (leftover / "state.json").write_text("{}")
    assert session.complete_checkpoints() == []

    session.report({}, scratch, step=1)
    session.report({}, scratch, step=2)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["checkpoint_00000001", "checkpoint_00000002"]
    assert (tmp_path / "run" / "checkpoint_00000002" / "optimizer.safetensors").stat().st_size == 1000

"""Full-state checkpoints: everything a resumed run needs comes back exactly, in safetensors + JSON only."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch

from components.training.optim import lr_factor, make_optimizer, make_scheduler
from components.training.session import LocalSession
from components.training.state import RNG_FILE, STATE_FILE, load_train_state, read_state_json, save_train_state
from components.training.step import train_step
from model.batches import TrainBatch
from model.losses import LossWeights
from model.vla import VLAModel
from tests.model.conftest import TINY, mmu_batch, robot_batch

WEIGHTS = LossWeights(mmu=0.1, pre=1.0, act=1.0)


def fresh(seed: int):
    torch.manual_seed(seed)
    model = VLAModel(TINY)
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.01)
    return model, opt, make_scheduler(opt, steps=10, warmup_steps=3, min_lr_ratio=0.1)


def batch(seed: int) -> TrainBatch:
    return TrainBatch(robot_batch(TINY, 2, conditioned=True, seed=seed), mmu_batch(TINY, 2, seed=seed))


def step(model, opt, sched, seed):
    return train_step(model, opt, sched, [batch(seed)], WEIGHTS, bf16=False, clip=1.0)


def meta_model(model):
    with torch.device("meta"):
        return VLAModel(model.cfg, eos_id=model.layout.eos_id)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A model trained 3 steps and checkpointed, plus what it does next."""
    folder = tmp_path_factory.mktemp("ckpt")
    model, opt, sched = fresh(0)
    for s in range(3):
        step(model, opt, sched, s)
    random.seed(5)
    np.random.seed(6)
    save_train_state(folder, model, opt, sched, step=3, data_position={"epoch": 1, "batch": 7},
                     plain_model=meta_model(model))
    draws = (random.random(), np.random.rand(), torch.rand(3))
    step(model, opt, sched, 3)
    return folder, model, draws


def test_resume_restores_weights_moments_schedule_rng_and_data_position(saved):
    folder, continued, draws = saved
    model, opt, sched = fresh(1)  # different init: everything must come from the checkpoint
    restored = load_train_state(folder, model, opt, sched)
    assert restored.step == 3 and restored.data_position == {"epoch": 1, "batch": 7}
    assert sched.last_epoch == 3 and opt.param_groups[0]["lr"] == pytest.approx(1e-3 * lr_factor(3, 10, 3, 0.1))
    assert (random.random(), np.random.rand()) == draws[:2]
    torch.testing.assert_close(torch.rand(3), draws[2])
    step(model, opt, sched, 3)  # the step the uninterrupted run took next lands on the same weights
    for (name, a), b in zip(model.state_dict().items(), continued.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_checkpoint_holds_only_safetensors_and_json_and_its_model_loads_for_evaluation(saved):
    folder = saved[0]
    suffixes = {p.suffix for p in folder.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".safetensors"}, suffixes  # no pickle anywhere
    meta = json.loads((folder / STATE_FILE).read_text())
    assert meta["step"] == 3 and meta["world_size"] == 1 and len(meta["rng"]) == 1
    assert (folder / RNG_FILE).is_file()
    VLAModel.from_pretrained(folder / "model")


def test_an_incomplete_checkpoint_is_refused_and_skipped_on_resume(saved, tmp_path):
    folder = saved[0]
    with pytest.raises(FileNotFoundError, match="state.json"):
        read_state_json(tmp_path)
    session = LocalSession(tmp_path, keep=2)
    (tmp_path / "checkpoint_00000009").mkdir()  # killed while writing: no state.json
    shutil.copytree(folder, tmp_path / "checkpoint_00000003")
    with session.latest_checkpoint() as latest:
        assert latest.name == "checkpoint_00000003"


def test_a_foreign_state_file_is_rejected_with_its_path(tmp_path):
    (tmp_path / STATE_FILE).write_text(json.dumps({"format": "something-else", "version": 1}))
    with pytest.raises(ValueError, match="state.json: not a upvla-train-state v1"):
        read_state_json(tmp_path)

"""Every Table-3 ablation and Table-1 baseline preset is expressible with the model's switches."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from components.core.config import PRESET_NAMES, load_config
from model.batches import TrainBatch
from model.losses import LossWeights
from model.vla import VLAModel
from tests.conftest import PROJECT_ROOT
from tests.model.conftest import mmu_batch, robot_batch, tiny


def stage_batch(cfg, stage) -> TrainBatch:
    """Only what the stage's λs and prompt need: no future frames without L_PRE, no actions without L_ACT."""
    robot = robot_batch(cfg, conditioned=stage.mmu_condition)
    robot = dataclasses.replace(robot, future_codes=robot.future_codes if stage.lambda_pre > 0 else None,
                                actions=robot.actions if stage.lambda_act > 0 else None)
    uses_robot = stage.lambda_pre > 0 or stage.lambda_act > 0
    return TrainBatch(robot if uses_robot else None, mmu_batch(cfg) if stage.mmu_batch_size > 0 else None)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_both_stages_of_every_preset_run(preset):
    project = load_config(PROJECT_ROOT / "params.yaml", preset=preset)
    cfg = tiny(action_head=project.model.action_head, backbone_init=project.model.backbone_init)
    torch.manual_seed(0)
    model = VLAModel(cfg)
    for stage in (project.pretrain, project.tune):
        weights = LossWeights(mmu=stage.lambda_mmu, pre=stage.lambda_pre, act=stage.lambda_act)
        loss, metrics = model(stage_batch(cfg, stage), weights)
        assert torch.isfinite(loss)
        computed = {name for name in ("mmu", "pre", "act") if name in metrics}
        assert computed == {name for name in ("mmu", "pre", "act") if getattr(weights, name) > 0}


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = VLAModel(tiny()).train()
    checkpointed = VLAModel(tiny()).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.enable_gradient_checkpointing()
    assert checkpointed.backbone.is_activation_checkpointing and checkpointed.vision.is_activation_checkpointing
    batch = TrainBatch(robot_batch(plain.cfg, conditioned=True), mmu_batch(plain.cfg))
    weights = LossWeights(0.1, 1, 1)
    for model in (plain, checkpointed):
        model(batch, weights)[0].backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)

"""VLAModel contracts: shapes of every sequence type, λ switching, gradient routing, input errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.batches import RobotBatch, TrainBatch
from model.losses import LossWeights, action_loss
from model.vla import VLAModel, bf16_autocast
from tests.model.conftest import mmu_batch, robot_batch, tiny

FULL = LossWeights(mmu=0.1, pre=1.0, act=1.0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VLAModel(tiny())


@pytest.mark.parametrize("conditioned", [False, True])
def test_training_forward_returns_every_term(model, conditioned):
    cfg = model.cfg
    batch = TrainBatch(robot_batch(cfg, conditioned=conditioned), mmu_batch(cfg))
    loss, metrics = model(batch, FULL)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert {"loss", "mmu", "pre", "act", "act_pose_mse", "act_gripper_bce"} <= set(metrics)
    expected = 0.1 * metrics["mmu"] + metrics["pre"] + metrics["act"]
    torch.testing.assert_close(metrics["loss"], expected)
    # a fresh model is near chance on codes and text
    assert abs(metrics["pre"].item() - torch.log(torch.tensor(64.0)).item()) < 1.0


@pytest.mark.parametrize("conditioned", [False, True])
def test_predict_shapes_and_valid_actions(model, conditioned):
    cfg = model.cfg
    inputs = robot_batch(cfg, batch=4, conditioned=conditioned, targets=False)
    pred = model.predict(inputs, decode_images=True)
    assert pred.actions.shape == (4, cfg.chunk_len, 7)
    assert pred.actions[..., :6].abs().max() <= 1.0
    assert set(pred.actions[..., 6].unique().tolist()) <= {-1.0, 1.0}
    assert pred.future_codes.shape == (4, cfg.vq.tokens_per_image) and pred.future_codes.dtype == torch.long
    assert 0 <= pred.future_codes.min() and pred.future_codes.max() < cfg.vq.codebook_size
    assert pred.future_images.shape == (4, 1, 3, cfg.vq.image_size, cfg.vq.image_size)
    assert model.predict(inputs).future_images is None  # decoding only when asked


def test_predict_is_per_environment(model):
    """Batched inference equals one-by-one inference (rows do not interact, pads included)."""
    inputs = robot_batch(model.cfg, batch=3, conditioned=True, targets=False)
    batched = model.predict(inputs, bf16=False)
    for i in range(3):
        one = RobotBatch(**{f.name: None if getattr(inputs, f.name) is None else getattr(inputs, f.name)[i:i + 1]
                            for f in dataclasses.fields(inputs)})
        single = model.predict(one, bf16=False)
        torch.testing.assert_close(single.actions, batched.actions[i:i + 1], atol=1e-4, rtol=1e-4)
        assert torch.equal(single.future_codes, batched.future_codes[i:i + 1])


def test_two_views_share_one_image_block():
    cfg = tiny(num_views=2)
    torch.manual_seed(0)
    m = VLAModel(cfg)
    batch = robot_batch(cfg)
    assert batch.current_codes.shape[1] == 2 * cfg.vq.tokens_per_image
    loss, _ = m(TrainBatch(batch), LossWeights(0, 1, 1))
    pred = m.predict(robot_batch(cfg, targets=False), decode_images=True)
    assert pred.future_images.shape[:2] == (3, 2) and torch.isfinite(loss)


def test_zero_weight_terms_are_skipped_and_need_no_inputs(model):
    cfg = model.cfg
    no_future = dataclasses.replace(robot_batch(cfg), future_codes=None)
    _, metrics = model(TrainBatch(no_future), LossWeights(mmu=0, pre=0, act=1))
    assert "pre" not in metrics and "mmu" not in metrics
    no_actions = dataclasses.replace(robot_batch(cfg), actions=None)
    _, metrics = model(TrainBatch(no_actions), LossWeights(mmu=0, pre=1, act=0))
    assert set(metrics) == {"pre", "loss"}
    _, metrics = model(TrainBatch(mmu=mmu_batch(cfg)), LossWeights(mmu=1, pre=0, act=0))
    assert set(metrics) == {"mmu", "loss"}


@pytest.mark.parametrize(("batch", "weights", "message"), [
    (lambda c: TrainBatch(dataclasses.replace(robot_batch(c), future_codes=None), mmu_batch(c)), FULL,
     "future_codes: required"),
    (lambda c: TrainBatch(dataclasses.replace(robot_batch(c), actions=None), mmu_batch(c)), FULL, "actions: required"),
    (lambda c: TrainBatch(robot_batch(c)), FULL, "TrainBatch.mmu: required"),
    (lambda c: TrainBatch(mmu=mmu_batch(c)), LossWeights(0, 1, 0), "TrainBatch.robot: required"),
    (lambda c: TrainBatch(dataclasses.replace(robot_batch(c), current_codes=torch.zeros(3, 5, dtype=torch.long))),
     LossWeights(0, 1, 0), r"current_codes: expected \(B, 16\)"),
    (lambda c: TrainBatch(dataclasses.replace(robot_batch(c), current_codes=torch.full((3, 16), 64))),
     LossWeights(0, 1, 0), r"current_codes: must lie in \[0, 64\)"),
    (lambda c: TrainBatch(dataclasses.replace(robot_batch(c), actions=torch.zeros(3, 10, 7))),
     LossWeights(0, 0, 1), r"actions: expected \(B, chunk_len, action_dim\) = \(3, 4, 7\)"),
    (lambda c: TrainBatch(dataclasses.replace(robot_batch(c), future_codes=torch.zeros(3, 8, dtype=torch.long))),
     LossWeights(0, 1, 0), r"future_codes: expected \(3, 16\)"),
    (lambda c: TrainBatch(mmu=dataclasses.replace(mmu_batch(c), labels=torch.zeros(3, 4, dtype=torch.long))),
     LossWeights(1, 0, 0), "MMUBatch.labels: shape"),
])
def test_missing_or_malformed_inputs_name_the_field(model, batch, weights, message):
    with pytest.raises(ValueError, match=message):
        model(batch(model.cfg), weights)


def test_loss_weights_are_checked():
    with pytest.raises(ValueError, match="lambda_pre: must be >= 0"):
        LossWeights(0, -1, 0)
    with pytest.raises(ValueError, match="at least one"):
        LossWeights(0, 0, 0)
    with pytest.raises(ValueError, match="go together"):
        RobotBatch(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 16, dtype=torch.long),
                   scene_pixels=torch.zeros(1, 3, 32, 32))


def grads_by_module(model):
    out = {}
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        got = p.grad is not None and bool(p.grad.abs().sum() > 0)
        out.setdefault(top, []).append((name, p.requires_grad, got))
    return out


@pytest.mark.parametrize("freeze_vision", [False, True])
def test_gradients_reach_every_trained_module_and_no_frozen_one(freeze_vision):
    torch.manual_seed(0)
    m = VLAModel(tiny(freeze_vision=freeze_vision))
    loss, _ = m(TrainBatch(robot_batch(m.cfg, conditioned=True), mmu_batch(m.cfg)), FULL)
    loss.backward()
    modules = grads_by_module(m)
    assert set(modules) == {"backbone", "vision", "projector", "vq", "action_head"}
    frozen = {"vq", "vision"} if freeze_vision else {"vq"}
    for top, params in modules.items():
        for name, trainable, got in params:
            assert trainable == (top not in frozen), name
            assert got == trainable, f"{name}: trainable={trainable}, gradient={got}"


def test_prediction_only_step_touches_no_action_head_or_vision():
    """Stage 1 (λ_ACT = 0, plain prompt): the action head and vision get no gradient (DDP: find unused)."""
    torch.manual_seed(0)
    m = VLAModel(tiny())
    loss, _ = m(TrainBatch(robot_batch(m.cfg)), LossWeights(mmu=0, pre=1, act=0))
    loss.backward()
    modules = grads_by_module(m)
    assert not any(got for _, _, got in modules["action_head"] + modules["vision"] + modules["projector"])
    assert all(got for _, _, got in modules["backbone"])


def test_bf16_autocast_runs_and_stays_close(model):
    batch = TrainBatch(robot_batch(model.cfg, conditioned=True), mmu_batch(model.cfg))
    fp32, _ = model(batch, FULL)
    with bf16_autocast("cpu"):
        bf16, _ = model(batch, FULL)
    assert bf16.dtype == torch.float32  # losses are computed in fp32
    assert abs(bf16.item() - fp32.item()) < 0.05 * fp32.item()


def test_a_model_cast_to_bf16_predicts_like_fp32(model):
    """Inference may cast the weights once (no per-call autocast casts); inputs are cast to match."""
    inputs = robot_batch(model.cfg, batch=2, conditioned=True, targets=False)
    reference = model.predict(inputs, bf16=False)
    cast = VLAModel(model.cfg).eval()
    cast.load_state_dict(model.state_dict())
    cast = cast.to(torch.bfloat16)
    pred = cast.predict(inputs, bf16=False, decode_images=True)
    assert pred.actions.dtype == torch.float32 and pred.future_images.dtype == torch.float32
    assert (pred.actions[..., :6] - reference.actions[..., :6]).abs().max() < 0.1
    assert cast.generate_description(inputs.scene_pixels, inputs.instruction_ids, max_new_tokens=4).shape[0] == 2


def test_pose_is_learned_standardised_and_predicted_in_action_units():
    torch.manual_seed(0)
    model = VLAModel(tiny())
    mean, std = torch.linspace(-0.2, 0.3, 6), torch.linspace(0.1, 0.4, 6)
    model.set_action_stats(mean, std)
    batch = robot_batch(model.cfg, batch=4)
    raw = torch.randn(4, model.cfg.chunk_len, 7)
    loss, parts = action_loss(raw, batch.actions, pose_mean=mean, pose_std=std)
    # the optimised term is the MSE of standardised poses ...
    standardised = ((raw[..., :6] - (batch.actions[..., :6] - mean) / std) ** 2).mean()
    torch.testing.assert_close(loss - parts["act_gripper_bce"], standardised)
    # ... the logged one the MSE in action units, as without standardisation
    in_units = torch.cat([raw[..., :6] * std + mean, raw[..., 6:]], dim=-1)
    torch.testing.assert_close(parts["act_pose_mse"], action_loss(in_units, batch.actions)[1]["act_pose_mse"])
    # inference de-standardises: with a tiny std every predicted pose is the mean
    model.set_action_stats(mean, torch.full((6,), 1e-6))
    pred = model.predict(robot_batch(model.cfg, batch=2, targets=False), bf16=False)
    torch.testing.assert_close(pred.actions[..., :6], mean.expand(2, model.cfg.chunk_len, 6), atol=1e-4, rtol=0)


def test_without_normalize_actions_the_stats_are_unused():
    torch.manual_seed(0)
    model = VLAModel(tiny(normalize_actions=False)).eval()
    batch = robot_batch(model.cfg, batch=2)
    act = LossWeights(mmu=0.0, pre=0.0, act=1.0)
    before = model(TrainBatch(batch), act)[1]["act"]
    model.set_action_stats(torch.full((6,), 0.5), torch.full((6,), 0.01))
    torch.testing.assert_close(model(TrainBatch(batch), act)[1]["act"], before)
    states = torch.randn(2, model.cfg.chunk_len, model.cfg.hidden_size)
    torch.testing.assert_close(model.head_actions(states), model.action_head(states))


@pytest.mark.parametrize(("mean", "std", "message"), [
    (torch.zeros(5), torch.ones(5), "shape"),
    (torch.zeros(6), torch.zeros(6), "std > 0"),
    (torch.full((6,), float("nan")), torch.ones(6), "finite"),
])
def test_bad_action_stats_are_refused(model, mean, std, message):
    with pytest.raises(ValueError, match=message):
        model.set_action_stats(mean, std)

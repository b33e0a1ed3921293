"""Each training term can be driven down on a fixed small batch (nanochat's test_convergence).

A ≥ 90 % fall within a few hundred CPU steps shows the term, its mask and its gradient path are
wired so the model can learn it: a label shifted by one position, a leak or a detached head stalls it.
"""

from __future__ import annotations

import pytest
import torch

from model.batches import TrainBatch
from model.losses import LossWeights
from model.vla import VLAModel
from tests.model.conftest import mmu_batch, robot_batch, tiny


def train(model: VLAModel, batch: TrainBatch, weights: LossWeights, term: str, steps: int, lr: float):
    torch.manual_seed(0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    history = []
    for _ in range(steps):
        loss, metrics = model(batch, weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(metrics[term].item())
    return history


def fit(term: str, weights: LossWeights, conditioned: bool = False, **changes):
    torch.manual_seed(0)
    model = VLAModel(tiny(**changes))
    batch = TrainBatch(robot_batch(model.cfg, batch=4, conditioned=conditioned), mmu_batch(model.cfg, batch=4))
    history = train(model, batch, weights, term, steps=200, lr=3e-3)
    first, last = history[0], min(history[-10:])
    assert last <= 0.1 * first, f"{term}: {first:.3f} -> {last:.3f}"
    return model.eval(), batch


def test_future_prediction_falls_and_predict_reads_the_same_positions():
    model, batch = fit("pre", LossWeights(mmu=0, pre=1, act=0))
    assert torch.equal(model.predict(batch.robot, bf16=False).future_codes, batch.robot.future_codes)


@pytest.mark.parametrize("conditioned", [False, True])
def test_actions_fall_and_predict_returns_the_chunk(conditioned):
    model, batch = fit("act", LossWeights(mmu=0, pre=0, act=1), conditioned=conditioned)
    actions = model.predict(batch.robot, bf16=False).actions
    assert torch.equal(actions[..., 6], batch.robot.actions[..., 6])
    assert (actions[..., :6] - batch.robot.actions[..., :6]).abs().mean() < 0.1


def test_understanding_falls_and_greedy_generation_answers():
    """Labels are next tokens: after memorising, generating from the prompt reproduces each answer."""
    model, batch = fit("mmu", LossWeights(mmu=1, pre=0, act=0))
    mmu = batch.mmu
    prompt = mmu.input_ids[:, :4]
    out = model.generate_description(mmu.pixel_values, prompt, max_new_tokens=8, bf16=False)
    for i in range(4):
        answer = mmu.labels[i][(mmu.labels[i] != -100) & (mmu.labels[i] != model.layout.eos_id)]
        assert out[i, : len(answer)].tolist() == answer.tolist()
        assert (out[i, len(answer):] == model.layout.pad_id).all()  # stopped at eos


def test_rt2_action_tokens_fall_by_90_percent():
    model, batch = fit("act", LossWeights(mmu=0, pre=0, act=1), action_head="tokens")
    # after memorising, greedy decoding reproduces the demonstrated (binned) chunk
    pred = model.predict(batch.robot, bf16=False)
    expected = model.binner.from_bins(model.binner.to_bins(batch.robot.actions))
    torch.testing.assert_close(pred.actions, expected)

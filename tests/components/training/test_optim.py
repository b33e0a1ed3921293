"""AdamW groups (decay on matrices only, matched to Phi's and CLIP's real parameter names) and the lr schedule."""

from __future__ import annotations

import math

import pytest
import torch

from components.training.optim import lr_factor, make_optimizer, make_scheduler, split_decay
from model.vla import VLAModel
from tests.model.conftest import TINY


@pytest.fixture(scope="module")
def groups():
    torch.manual_seed(0)
    model = VLAModel(TINY)
    decay, no_decay = split_decay(model)
    return model, set(decay), set(no_decay)


def test_every_trainable_parameter_is_in_exactly_one_group_and_frozen_ones_in_none(groups):
    model, decay, no_decay = groups
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decay | no_decay == trainable and not decay & no_decay
    assert not any(n.startswith("vq.") for n in decay | no_decay)  # the frozen tokenizer


@pytest.mark.parametrize("name", [
    "backbone.model.embed_tokens.weight", "backbone.model.layers.0.input_layernorm.weight",
    "backbone.model.layers.1.input_layernorm.bias", "backbone.model.final_layernorm.weight",
    "backbone.model.layers.0.self_attn.q_proj.bias", "backbone.lm_head.bias",
    "vision.embeddings.position_embedding.weight", "vision.embeddings.class_embedding",
    "vision.pre_layrnorm.weight", "vision.encoder.layers.0.layer_norm1.weight",
    "action_head.latent", "action_head.norm_attn.weight", "action_head.attn.in_proj_bias",
])
def test_biases_norms_embeddings_and_the_latent_query_are_not_decayed(groups, name):
    _, decay, no_decay = groups
    assert name in no_decay and name not in decay


@pytest.mark.parametrize("name", [
    "backbone.model.layers.0.self_attn.q_proj.weight", "backbone.model.layers.1.self_attn.dense.weight",
    "backbone.model.layers.0.mlp.fc1.weight", "backbone.lm_head.weight", "projector.0.weight",
    "vision.embeddings.patch_embedding.weight", "action_head.attn.in_proj_weight",
    "action_head.attn.out_proj.weight", "action_head.mlp.gate_up.weight", "action_head.to_actions.weight",
])
def test_weight_matrices_are_decayed(groups, name):
    _, decay, _ = groups
    assert name in decay


def test_optimizer_groups_carry_the_decay():
    model = VLAModel(TINY)
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.05)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(p.requires_grad for p in model.parameters())


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    steps, warmup, floor = 100, 10, 0.1
    factors = [lr_factor(s, steps, warmup, floor) for s in range(steps + 5)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:10], factors[1:10], strict=False))
    tail = factors[10:steps]
    assert all(a >= b for a, b in zip(tail, tail[1:], strict=False))
    assert factors[55] == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factors[steps:] == pytest.approx([floor] * 5)


def test_scheduler_steps_the_optimizer_lr():
    param = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([param], lr=2.0)
    sched = make_scheduler(opt, steps=4, warmup_steps=2, min_lr_ratio=0.0)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([1.0, 2.0, 2.0, 1.0])

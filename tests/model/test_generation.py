"""Greedy decoding: the KV-cache path equals full re-computation; RT-2 decodes valid CALVIN actions."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.batches import RobotBatch
from model.generation import decode_action_bins, greedy_decode
from model.vla import VLAModel
from tests.model.conftest import robot_batch, text_ids, tiny


def sharpened(cfg):
    """A random model with a larger-than-init LM head, so greedy tokens vary from step to step."""
    torch.manual_seed(0)
    model = VLAModel(cfg).eval()
    with torch.no_grad():
        model.backbone.lm_head.weight.mul_(20)
    return model


def test_cached_description_equals_recomputation():
    model = sharpened(tiny())
    cfg, layout = model.cfg, model.layout
    g = torch.Generator().manual_seed(3)
    prompts = text_ids(layout, [2, 5, 3], 6, g)  # ragged: pads between prompt and generated text
    pixels = torch.randn(3, 3, cfg.vision_image_size, cfg.vision_image_size, generator=g)
    cached = model.generate_description(pixels, prompts, max_new_tokens=12, bf16=False)
    full = model.generate_description(pixels, prompts, max_new_tokens=12, bf16=False, use_cache=False)
    assert torch.equal(cached, full)
    # not only the argmax: every step's logits agree (positions and masks of the cached columns are right)
    with torch.no_grad():
        seq = model.mmu_sequence(pixels, prompts)
        with_cache, without = [], []
        greedy_decode(model, seq, 12, layout.text_slice, layout.eos_id, scores=with_cache)
        greedy_decode(model, seq, 12, layout.text_slice, layout.eos_id, use_cache=False, scores=without)
    torch.testing.assert_close(torch.stack(with_cache), torch.stack(without), atol=1e-4, rtol=1e-4)
    assert cached.shape[0] == 3 and cached.shape[1] <= 12
    assert len(cached.unique()) > 4  # a meaningful comparison, not one repeated token
    assert ((cached < cfg.text_vocab_size) | (cached == layout.pad_id)).all()
    assert not (cached == layout.eos_id).any()


def test_generated_description_conditions_the_action_prompt():
    """The policy flow: describe the scene once, then replan with L' = [CLIP tokens, description, instruction]."""
    model = sharpened(tiny())
    inputs = robot_batch(model.cfg, batch=2, conditioned=True, targets=False)
    prompt = torch.tensor([[11, 12, 13]] * 2)
    description = model.generate_description(inputs.scene_pixels, prompt)
    pred = model.predict(dataclasses.replace(inputs, description_ids=description))
    assert pred.actions.shape == (2, model.cfg.chunk_len, 7)


@pytest.mark.parametrize("conditioned", [False, True])
def test_rt2_cached_decoding_equals_recomputation_and_gives_valid_actions(conditioned):
    model = sharpened(tiny(action_head="tokens"))
    cfg = model.cfg
    inputs = robot_batch(cfg, batch=3, conditioned=conditioned, targets=False)
    bins, _, _ = decode_action_bins(model, inputs)
    full, _, _ = decode_action_bins(model, inputs, use_cache=False)
    assert torch.equal(bins, full)
    assert bins.shape == (3, cfg.chunk_len * cfg.action_dim)
    assert bins.min() >= 0 and bins.max() < cfg.action_bins and len(bins.unique()) > 4
    actions = model.predict(inputs, bf16=False).actions
    assert actions.shape == (3, cfg.chunk_len, 7)
    assert actions[..., :6].abs().max() <= 1.0 and set(actions[..., 6].unique().tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(actions, model.binner.from_bins(bins.view(3, cfg.chunk_len, 7)))


def test_action_binning_round_trips_within_half_a_bin():
    binner = VLAModel(tiny(action_head="tokens")).binner
    actions = torch.rand(5, 4, 7) * 2 - 1
    actions[..., 6] = torch.where(actions[..., 6] > 0, 1.0, -1.0)
    back = binner.from_bins(binner.to_bins(actions))
    assert (back[..., :6] - actions[..., :6]).abs().max() <= 1 / (binner.bins - 1) + 1e-6
    assert torch.equal(back[..., 6], actions[..., 6])


def test_single_environment_prompt_needs_no_padding():
    model = sharpened(tiny())
    one = RobotBatch(torch.tensor([[3, 4, 5]]), torch.zeros(1, model.cfg.vq.tokens_per_image, dtype=torch.long))
    assert model.predict(one).actions.shape == (1, model.cfg.chunk_len, 7)

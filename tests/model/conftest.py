"""A smoke-sized model config and batch builders shared by the model tests (tiny so CPU tests stay fast)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.batches import IGNORE, MMUBatch, RobotBatch
from model.config import ModelConfig, VQConfig
from model.vocab import TokenLayout

TINY = ModelConfig(
    backbone_path=None, llm_path=None, backbone_init="unified", vision_path=None, qk_layernorm=False,
    text_vocab_size=300, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
    max_position_embeddings=256, partial_rotary_factor=0.5,
    vision_hidden_size=32, vision_layers=2, vision_heads=2, vision_image_size=32, vision_patch_size=8,
    vision_feature_layer=-1, freeze_vision=False,
    vq=VQConfig(arch="compact", image_size=32, downsample=8, codebook_bits=6, base_channels=8, num_res_blocks=1,
                 channel_mult=None, res_blocks=None, decoder_channel_mult=None, decoder_res_blocks=None),
    num_views=1, chunk_len=4, delta_t=4, action_dim=7, action_head="map", action_bins=32, map_heads=2,
    map_variant="ours", normalize_actions=True, proprio=False, proprio_gripper=True, prompt_layout="packed",
    max_text_len=16, max_description_len=12,
)


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return TINY


def tiny(**changes) -> ModelConfig:
    """TINY with some fields replaced (e.g. action_head="tokens")."""
    return dataclasses.replace(TINY, **changes)


def text_ids(layout: TokenLayout, lengths: list[int], width: int, generator: torch.Generator) -> torch.Tensor:
    """(B, width) random text ids (never eos), row i valid for lengths[i] tokens then [PAD]."""
    ids = torch.randint(0, layout.eos_id, (len(lengths), width), generator=generator)
    for i, n in enumerate(lengths):
        ids[i, n:] = layout.pad_id
    return ids


def robot_batch(cfg: ModelConfig, batch: int = 3, *, conditioned: bool = False, seed: int = 0,
                targets: bool = True) -> RobotBatch:
    """A random RobotBatch with ragged instructions (and descriptions)."""
    g = torch.Generator().manual_seed(seed)
    layout = TokenLayout.from_config(cfg)
    n = cfg.num_views * cfg.vq.tokens_per_image
    lengths = [5 + (i % 3) for i in range(batch)]
    codes = lambda: torch.randint(0, cfg.vq.codebook_size, (batch, n), generator=g)  # noqa: E731
    actions = torch.rand(batch, cfg.chunk_len, cfg.action_dim, generator=g) * 2 - 1
    actions[..., -1] = torch.where(actions[..., -1] > 0, 1.0, -1.0)
    return RobotBatch(
        instruction_ids=text_ids(layout, lengths, 8, g),
        current_codes=codes(),
        future_codes=codes() if targets else None,
        actions=actions if targets else None,
        scene_pixels=torch.randn(batch, 3, cfg.vision_image_size, cfg.vision_image_size, generator=g)
        if conditioned else None,
        description_ids=text_ids(layout, [4 + i for i in range(batch)], 7, g) if conditioned else None,
    )


def mmu_batch(cfg: ModelConfig, batch: int = 3, seed: int = 0) -> MMUBatch:
    """A random right-padded MMUBatch: 4 prompt tokens, then a 3-5 token answer and eos."""
    g = torch.Generator().manual_seed(seed)
    layout = TokenLayout.from_config(cfg)
    answer_lengths = [3 + (i % 3) for i in range(batch)]
    ids = text_ids(layout, [4 + a + 1 for a in answer_lengths], 10, g)
    labels = torch.full_like(ids, IGNORE)
    for i, a in enumerate(answer_lengths):
        ids[i, 4 + a] = layout.eos_id
        labels[i, 4: 4 + a + 1] = ids[i, 4: 4 + a + 1]
    pixels = torch.randn(batch, 3, cfg.vision_image_size, cfg.vision_image_size, generator=g)
    return MMUBatch(pixel_values=pixels, input_ids=ids, labels=labels)

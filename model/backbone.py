"""The transformers parts of UP-VLA: the Phi language backbone and the CLIP vision tower.

Both are built at the sizes of a `ModelConfig` (random init) or loaded from local checkpoint folders
(`PhiForCausalLM` / `CLIPVisionModel` `save_pretrained` format; nothing is fetched from a hub), with
every size checked against the config so a wrong folder fails with the key that disagrees.

Loading a Phi folder resizes its embeddings and LM head to the unified vocabulary (model/vocab.py).
Rows copied from the checkpoint: all overlapping rows for a `unified` (Show-o-style) backbone whose
layout matches ours, only the text rows for a plain `llm` (Phi-1.5's rows past the tokenizer are
padding). Every other row starts at the mean of the text rows.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, PhiConfig, PhiForCausalLM

from model.config import ModelConfig

# Phi's `gelu_new` is the tanh GELU written out in Python; PyTorch's fused kernel computes the same
# function (max difference ~2e-7) about 4x faster, forward and backward, on CPU
FUSED_GELU = "gelu_pytorch_tanh"


def phi_config(cfg: ModelConfig, vocab_size: int) -> PhiConfig:
    """The transformers config of the backbone (SDPA attention; masks are passed as 4-D booleans)."""
    config = PhiConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings, partial_rotary_factor=cfg.partial_rotary_factor,
        tie_word_embeddings=False, pad_token_id=None, bos_token_id=None, eos_token_id=None, hidden_act=FUSED_GELU,
    )
    config._attn_implementation = "sdpa"
    return config


def clip_config(cfg: ModelConfig) -> CLIPVisionConfig:
    """The transformers config of the vision tower at the checkpoint's full depth."""
    return CLIPVisionConfig(
        hidden_size=cfg.vision_hidden_size, intermediate_size=4 * cfg.vision_hidden_size,
        num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
        image_size=cfg.vision_image_size, patch_size=cfg.vision_patch_size,
    )


def build_phi(cfg: ModelConfig, vocab_size: int) -> PhiForCausalLM:
    """A randomly initialised Phi causal LM at the config's sizes."""
    return PhiForCausalLM(phi_config(cfg, vocab_size))


def build_vision_tower(cfg: ModelConfig) -> CLIPVisionModel:
    """A randomly initialised CLIP vision tower, cut after `vision_feature_layer`."""
    return cut_vision_tower(CLIPVisionModel(clip_config(cfg)), cfg)


def cut_vision_tower(tower: CLIPVisionModel, cfg: ModelConfig) -> CLIPVisionModel:
    """Drop the layers after the feature layer and the pooled-output norm (never used for patch features).

    After the cut, `tower(pixels).last_hidden_state[:, 1:]` equals the uncut tower's
    `hidden_states[vision_feature_layer][:, 1:]`, and every remaining parameter receives gradient.
    """
    keep = cfg.vision_layers + cfg.vision_feature_layer + 1
    tower.encoder.layers = tower.encoder.layers[:keep]
    tower.post_layernorm = nn.Identity()
    return tower


def _check_sizes(folder: Path, pairs: dict[str, tuple[object, object]]) -> None:
    for key, (ours, theirs) in pairs.items():
        if ours != theirs:
            raise ValueError(f"model.{key}: {ours}, but the checkpoint {folder} has {theirs}")


def load_phi(folder: str | Path, cfg: ModelConfig, vocab_size: int, keep_rows: int) -> PhiForCausalLM:
    """Load a local Phi checkpoint folder and resize it to the unified vocabulary.

    Args:
        folder: a `PhiForCausalLM.save_pretrained` folder (Phi-1.5, or a Show-o LLM exported as Phi).
        cfg: the model config; its backbone sizes must match the checkpoint's.
        vocab_size: rows of the unified vocabulary.
        keep_rows: leading rows kept from the checkpoint (the rest start at the text-row mean).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model.backbone_path/llm_path: {folder} has no config.json (not a Phi folder)")
    overrides = {"hidden_act": FUSED_GELU} if PhiConfig.from_pretrained(str(folder)).hidden_act == "gelu_new" else {}
    phi = PhiForCausalLM.from_pretrained(str(folder), attn_implementation="sdpa", dtype=torch.float32, **overrides)
    c = phi.config
    _check_sizes(folder, {
        "hidden_size": (cfg.hidden_size, c.hidden_size), "num_layers": (cfg.num_layers, c.num_hidden_layers),
        "num_heads": (cfg.num_heads, c.num_attention_heads),
        "intermediate_size": (cfg.intermediate_size, c.intermediate_size),
        "partial_rotary_factor": (cfg.partial_rotary_factor, c.rope_parameters["partial_rotary_factor"]),
    })
    if c.vocab_size < cfg.text_vocab_size:
        raise ValueError(f"model.text_vocab_size: {cfg.text_vocab_size}, but {folder} has only {c.vocab_size} rows")
    keep = min(keep_rows, c.vocab_size)
    phi.resize_token_embeddings(vocab_size, mean_resizing=False)
    _reset_rows(phi, start=keep, text_rows=cfg.text_vocab_size)
    phi.config.max_position_embeddings = cfg.max_position_embeddings
    phi.config.pad_token_id = phi.config.bos_token_id = phi.config.eos_token_id = None
    return phi


@torch.no_grad()
def _reset_rows(phi: PhiForCausalLM, start: int, text_rows: int) -> None:
    """Set embedding and LM-head rows [start, vocab) to the mean of the text rows."""
    embed, head = phi.model.embed_tokens.weight, phi.lm_head
    embed[start:] = embed[:text_rows].mean(dim=0)
    head.weight[start:] = head.weight[:text_rows].mean(dim=0)
    if head.bias is not None:
        head.bias[start:] = head.bias[:text_rows].mean()


def load_vision_tower(folder: str | Path, cfg: ModelConfig) -> CLIPVisionModel:
    """Load a local CLIP vision folder (e.g. clip-vit-large-patch14-336), check its sizes, cut it."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model.vision_path: {folder} has no config.json (not a CLIP folder)")
    tower = CLIPVisionModel.from_pretrained(str(folder), dtype=torch.float32)
    c = tower.config
    _check_sizes(folder, {
        "vision_hidden_size": (cfg.vision_hidden_size, c.hidden_size),
        "vision_layers": (cfg.vision_layers, c.num_hidden_layers),
        "vision_heads": (cfg.vision_heads, c.num_attention_heads),
        "vision_image_size": (cfg.vision_image_size, c.image_size),
        "vision_patch_size": (cfg.vision_patch_size, c.patch_size),
    })
    if c.intermediate_size != 4 * c.hidden_size:
        raise ValueError(f"{folder}: CLIP intermediate_size {c.intermediate_size} is not 4 x hidden_size")
    return cut_vision_tower(tower, cfg)

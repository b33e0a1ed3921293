"""The transformers parts of UP-VLA: the Phi language backbone and the CLIP vision tower.

Both are built at the sizes of a `ModelConfig` (random init) or loaded from local checkpoint folders
(`PhiForCausalLM` / `CLIPVisionModel` `save_pretrained` format; nothing is fetched from a hub), with
every size checked against the config so a wrong folder fails with the key that disagrees.

Loading a Phi folder resizes its embeddings and LM head to the unified vocabulary (model/vocab.py).
Rows copied from the checkpoint: all overlapping rows for a `unified` (Show-o-style) backbone whose
layout matches ours, only the text rows for a plain `llm` (Phi-1.5's rows past the tokenizer are
padding). Every other row starts at the mean of the text rows. `model.qk_layernorm` switches on
transformers' LayerNorm over each head's queries and keys (`self_attn.q_layernorm` / `k_layernorm`,
Show-o's Phi); a folder must agree with it. The published Show-o folder (not a transformers folder)
is read by model/showo.py.
"""

from __future__ import annotations

import json
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
        qk_layernorm=cfg.qk_layernorm,
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
        folder: a `PhiForCausalLM.save_pretrained` folder (Phi-1.5; a published Show-o folder goes through
            model/showo.py instead).
        cfg: the model config; its backbone sizes must match the checkpoint's.
        vocab_size: rows of the unified vocabulary.
        keep_rows: leading rows kept from the checkpoint (the rest start at the text-row mean).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model.backbone_path/llm_path: {folder} has no config.json (not a Phi folder)")
    _check_model_type(folder / "config.json")
    overrides = {"hidden_act": FUSED_GELU} if PhiConfig.from_pretrained(str(folder)).hidden_act == "gelu_new" else {}
    phi = PhiForCausalLM.from_pretrained(str(folder), attn_implementation="sdpa", dtype=torch.float32, **overrides)
    c = phi.config
    _check_sizes(folder, {
        "hidden_size": (cfg.hidden_size, c.hidden_size), "num_layers": (cfg.num_layers, c.num_hidden_layers),
        "num_heads": (cfg.num_heads, c.num_attention_heads),
        "intermediate_size": (cfg.intermediate_size, c.intermediate_size),
        "partial_rotary_factor": (cfg.partial_rotary_factor, c.rope_parameters["partial_rotary_factor"]),
        "qk_layernorm": (cfg.qk_layernorm, c.qk_layernorm),
    })
    if c.vocab_size < cfg.text_vocab_size:
        raise ValueError(f"model.text_vocab_size: {cfg.text_vocab_size}, but {folder} has only {c.vocab_size} rows")
    keep = min(keep_rows, c.vocab_size)
    phi.resize_token_embeddings(vocab_size, mean_resizing=False)
    reset_rows(phi, start=keep, text_rows=cfg.text_vocab_size)
    phi.config.max_position_embeddings = cfg.max_position_embeddings
    phi.config.pad_token_id = phi.config.bos_token_id = phi.config.eos_token_id = None
    return phi


def _check_model_type(path: Path) -> None:
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type != "phi":
        raise ValueError(f"{path}: model_type: expected 'phi' (a transformers Phi folder), got {model_type!r}; a "
                         f"published Show-o folder loads only as model.backbone_path with backbone_init unified")


@torch.no_grad()
def reset_rows(phi: PhiForCausalLM, start: int, text_rows: int) -> None:
    """Set embedding and LM-head rows [start, vocab) to the mean of the text rows."""
    embed, head = phi.model.embed_tokens.weight, phi.lm_head
    embed[start:] = embed[:text_rows].mean(dim=0)
    head.weight[start:] = head.weight[:text_rows].mean(dim=0)
    if head.bias is not None:
        head.bias[start:] = head.bias[:text_rows].mean()


# keys of a full CLIPModel folder (the published clip-vit-large-patch14-336) that a vision tower leaves out
CLIP_TEXT_SIDE = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")


def load_vision_tower(folder: str | Path, cfg: ModelConfig) -> CLIPVisionModel:
    """Load a local CLIP folder (e.g. clip-vit-large-patch14-336, a full CLIPModel), check its sizes, cut it.

    Every vision key of the folder is loaded; only the text tower, the two projections and logit_scale are
    left out. A missing or mis-shaped vision key, or any other unexpected key, is an error naming the folder.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model.vision_path: {folder} has no config.json (not a CLIP folder)")
    tower, info = CLIPVisionModel.from_pretrained(str(folder), dtype=torch.float32, output_loading_info=True)
    unexpected = sorted(k for k in info["unexpected_keys"] if not k.startswith(CLIP_TEXT_SIDE))
    if info["missing_keys"] or info["mismatched_keys"] or unexpected:
        raise ValueError(f"model.vision_path: the weights in {folder} do not fit a CLIP vision tower: missing "
                         f"{sorted(info['missing_keys'])}, mis-shaped {sorted(map(str, info['mismatched_keys']))}, "
                         f"unexpected {unexpected}")
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

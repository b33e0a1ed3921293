"""AdamW with decoupled weight decay on matrices only, and the warm-up + cosine learning-rate schedule.

Both training stages use these (components/training/loop.py). Weight decay goes to the weight matrices of
linear, convolution and attention projections; biases, norms (Phi's `input_layernorm`/`final_layernorm`,
CLIP's `layer_norm1/2`, RMSNorms), embedding tables (`embed_tokens`, CLIP's position and class
embeddings) and the MAP head's learned latent query are not decayed. The reference's `no_decay` list
(`layer_norm.weight`, `embeddings.weight`) matches none of Phi's names, so there only biases escape
decay; choosing by module type instead of by name cannot silently miss a renamed layer.

    groups = param_groups(model, weight_decay=0.01)
    optimizer = make_optimizer(model, lr=3e-4, weight_decay=0.01)
    scheduler = make_scheduler(optimizer, steps=2000, warmup_steps=100, min_lr_ratio=0.1)
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

# Modules whose `weight` (a matrix or conv kernel) is decayed; every other parameter is not.
DECAYED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# nn.MultiheadAttention keeps its packed q/k/v projection as a bare parameter
DECAYED_ATTENTION_PARAMS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
ADAM_BETAS = (0.9, 0.999)  # the reference's values
ADAM_EPS = 1e-8


def _named_trainable(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, nn.Parameter]]:
    """(full name, owning module, local name, parameter) of every parameter that requires grad."""
    for module_name, module in model.named_modules():
        for local, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                yield (f"{module_name}.{local}" if module_name else local), module, local, param


def is_decayed(module: nn.Module, local_name: str) -> bool:
    """Whether parameter `local_name` of `module` gets weight decay (see the module docstring)."""
    if isinstance(module, DECAYED_MODULES):
        return local_name == "weight"
    return isinstance(module, nn.MultiheadAttention) and local_name in DECAYED_ATTENTION_PARAMS


def split_decay(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the trainable parameters with and without weight decay, in `named_parameters` order."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for name, module, local, param in _named_trainable(model):
        if id(param) in seen:  # a shared (tied) parameter belongs to the first module that owns it
            continue
        seen.add(id(param))
        (decay if is_decayed(module, local) else no_decay).append(name)
    return decay, no_decay


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups: decayed matrices, and everything else with weight_decay 0."""
    decay, no_decay = split_decay(model)
    params = dict(model.named_parameters())
    return [{"params": [params[n] for n in decay], "weight_decay": weight_decay},
            {"params": [params[n] for n in no_decay], "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters (frozen ones, e.g. the VQ tokenizer, are left out)."""
    fused = next(model.parameters()).is_cuda  # the fused kernel is CUDA-only
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS,
                             fused=fused or None)


def lr_factor(step: int, steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak lr at optimiser step `step` (0-based): linear warm-up, then cosine.

    The warm-up ramps (step+1)/warmup so the first update is not at lr 0; the cosine part runs from 1 at
    the end of warm-up to `min_lr_ratio` at `steps`, and stays there if training runs longer.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, steps: int, warmup_steps: int, min_lr_ratio: float) -> LambdaLR:
    """A `LambdaLR` stepping `lr_factor` once per optimiser step; its `state_dict` is plain numbers (JSON)."""
    if warmup_steps > steps:
        raise ValueError(f"warmup_steps: {warmup_steps} is more than the run's {steps} steps")
    return LambdaLR(optimizer, lambda step: lr_factor(step, steps, warmup_steps, min_lr_ratio))

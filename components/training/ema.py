"""An exponential moving average (EMA) of the trained weights: the model a stage hands to the next one.

Behaviour-cloning policies swing between checkpoints in closed loop even when their training loss has
settled; evaluating an average of the recent updates is the usual cure (Diffusion Policy evaluates one).
With `<stage>.ema_decay` > 0 every optimiser step does

    shadow <- shadow + (1 - d_t) * (param - shadow),    d_t = min(ema_decay, (1 + t) / (10 + t))

over the trainable parameters (t = optimiser steps done; the ramp keeps the first steps from being
dominated by the initial weights, and caps short runs: 0.999 is reached after 8990 steps, so a 3000-step
stage ends at 0.997, an average over its last ~330 updates). The full-state checkpoint keeps the live
weights in `model/` (so a resumed run continues exactly) and the average in `ema.safetensors`; the
stage's exported model folder (components/training/train.py) holds the average.

    ema = WeightEMA(model, decay=0.999)    # after sharding: FSDP2 parameters are DTensors, the shadows too
    ema.update(step)                       # after each optimiser step
    tensors = ema.full_state()             # a collective under FSDP2; {parameter name: full tensor}
    ema.load_full_state(tensors, "ckpt/ema.safetensors")   # on resume; errors name the file
"""

from __future__ import annotations

import torch
from torch import nn

EMA_FILE = "ema.safetensors"
WARMUP_OFFSET = 10  # d_t = (1 + t) / (10 + t) until it reaches the configured decay


def ema_decay_at(step: int, decay: float) -> float:
    """The decay used by the update after `step` optimiser steps (the ramp, capped at `decay`)."""
    return min(decay, (1 + step) / (WARMUP_OFFSET + step))


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor this rank holds (an FSDP2 DTensor's shard; any other tensor itself)."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


class WeightEMA:
    """fp32 shadow copies of a module's trainable parameters, averaged after every optimiser step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay: must be in (0, 1), got {decay}")
        self.decay = decay
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.shadow = {name: p.detach().clone().float() for name, p in self.params.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Average in the current weights; `step` = optimiser steps done before this one."""
        weight = 1.0 - ema_decay_at(step, self.decay)
        shadows = [_local(s) for s in self.shadow.values()]
        params = [_local(p).float() for p in self.params.values()]
        torch._foreach_lerp_(shadows, params, weight)

    def full_state(self) -> dict[str, torch.Tensor]:
        """{parameter name: full CPU tensor} of the average (every rank calls it under FSDP2)."""
        out = {}
        for name, shadow in self.shadow.items():
            full = shadow.full_tensor() if hasattr(shadow, "full_tensor") else shadow
            out[name] = full.detach().cpu().contiguous()
        return out

    @torch.no_grad()
    def load_full_state(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        """Restore what `full_state` returned; each rank takes its shard. Errors name `source` and the key."""
        missing = sorted(set(self.shadow) - set(tensors))
        unexpected = sorted(set(tensors) - set(self.shadow))
        if missing or unexpected:
            key = (missing or unexpected)[0]
            raise ValueError(f"{source}: {key}: {'missing' if missing else 'not a trained parameter'} "
                             f"(the average was saved for other trained parameters)")
        for name, shadow in self.shadow.items():
            full = tensors[name].to(dtype=shadow.dtype)
            if hasattr(shadow, "device_mesh"):  # a DTensor: take this rank's shard of the full tensor
                from torch.distributed.tensor import distribute_tensor
                full = distribute_tensor(full.to(shadow.device), shadow.device_mesh, shadow.placements)
            if tuple(full.shape) != tuple(shadow.shape):
                raise ValueError(f"{source}: {name}: shape {tuple(full.shape)}, the model's is {tuple(shadow.shape)}")
            shadow.copy_(full)

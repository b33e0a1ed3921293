"""One optimiser step of UP-VLA training: gradient accumulation, bf16 autocast, clipping, AdamW, schedule.

Used by the loop of both stages (components/training/loop.py), for a plain module, DDP or FSDP2 alike:
gradients are synchronised across ranks only on the last micro-batch of an accumulation window.

    metrics = train_step(model, optimizer, scheduler, micro_batches, weights, bf16=True, clip=1.0)
    metrics["loss"].item(), metrics["grad_norm"].item(), metrics["lr"]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from model.batches import TrainBatch
from model.losses import LossWeights
from model.vla import bf16_autocast


@contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the cross-rank gradient all-reduce while accumulating (DDP `no_sync`, FSDP2 sync switch)."""
    if enabled:
        yield
    elif isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # an FSDP2 (`fully_shard`) module
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with nullcontext():
            yield


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimiser updates (frozen ones, e.g. the VQ tokenizer, excluded)."""
    return [p for p in model.parameters() if p.requires_grad]


def clip_gradients(model: nn.Module, max_norm: float) -> Tensor:
    """Clip the global gradient norm to `max_norm` (0 = no clipping) and return the norm before clipping.

    Works on DTensor (FSDP2) gradients too; the returned norm is a plain 0-dim tensor either way.
    """
    params = [p for p in trainable_parameters(model) if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               micro_batches: Sequence[TrainBatch], weights: LossWeights, *, bf16: bool,
               clip: float) -> dict[str, Tensor | float]:
    """Accumulate gradients over `micro_batches`, clip, step the optimiser and the schedule.

    Args:
        model: `VLAModel`, or its DDP / FSDP2 form; `model(batch, weights) -> (loss, metrics)`.
        optimizer: AdamW over the model's trainable parameters, stepped once.
        scheduler: the learning-rate schedule, stepped once.
        micro_batches: `grad_accum` batches already on the model's device; each loss is divided by their
            number, so the update equals one step on their union (for equal micro-batch sizes).
        weights: λ of each term (a term with λ = 0 is neither computed nor required in the batch).
        bf16: autocast matrix math to bf16 (CPU, or a bf16-capable GPU).
        clip: global gradient-norm clip; 0 disables.

    Returns:
        The micro-batch mean of each of the model's metrics (detached 0-dim tensors: `loss`, `pre`, `act`,
        `mmu`, parts), `grad_norm` (before clipping) and `lr` (the learning rate this update used).
    """
    if not micro_batches:
        raise ValueError("train_step: no micro-batches")
    device = next(p for p in model.parameters()).device
    n = len(micro_batches)
    sums: dict[str, Tensor] = {}
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(micro_batches):
        with gradient_sync(model, enabled=i == n - 1):
            with bf16_autocast(device, bf16):
                loss, metrics = model(batch, weights)
            (loss / n).backward()
        for key, value in metrics.items():
            sums[key] = sums[key] + value if key in sums else value
    grad_norm = clip_gradients(model, clip)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    out: dict[str, Tensor | float] = {key: value / n for key, value in sums.items()}
    out["grad_norm"] = grad_norm.detach()
    out["lr"] = lr
    return out

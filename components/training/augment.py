"""Training-time corruption of the current frame's VQ codes (`<stage>.code_noise`).

With `code_noise` = p > 0, every robot sample's current-frame codes (both views) are replaced, each
independently with probability p, by a code drawn uniformly from the codebook, before the step:

    batch = corrupt_codes(batch, 0.1, codebook_size=1024, generator=noise_generator(seed, rank, step, 0))

Only the model's input changes: the future frame it predicts and the actions it imitates stay the
recorded ones, so the model learns to act from a view whose codes flicker, as a VQ tokenizer's codes do
between nearby closed-loop frames. Inference never corrupts.

The draws depend only on (seed, rank, step, micro-batch), not on a global random state, so a resumed
run corrupts exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses

import torch

from model.batches import TrainBatch


def noise_generator(seed: int, rank: int, step: int, micro: int) -> torch.Generator:
    """A CPU generator private to one micro-batch of one rank's optimiser step."""
    mixed = ((seed * 1_000_003 + rank) * 1_000_003 + step) * 1_000_003 + micro
    return torch.Generator().manual_seed(mixed % (2**63))


def corrupt_codes(batch: TrainBatch, fraction: float, *, codebook_size: int,
                  generator: torch.Generator) -> TrainBatch:
    """`batch` with a `fraction` of its robot samples' current codes resampled uniformly (a new batch).

    Raises:
        ValueError: `fraction` outside [0, 1).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"code_noise: must be in [0, 1), got {fraction}")
    if fraction == 0.0 or batch.robot is None:
        return batch
    codes = batch.robot.current_codes
    hit = torch.rand(codes.shape, generator=generator) < fraction
    random_codes = torch.randint(0, codebook_size, codes.shape, generator=generator)
    noisy = torch.where(hit.to(codes.device), random_codes.to(codes.device, codes.dtype), codes)
    return TrainBatch(dataclasses.replace(batch.robot, current_codes=noisy), batch.mmu)

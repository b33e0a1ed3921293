"""Where a training worker runs: its rank, device, checkpoint store and report channel; DDP / FSDP2 wrapping.

The loop (components/training/loop.py) talks to a `TrainSession` only, so the same loop runs
* inside Ray Train (`RaySession`): `ray.train.report` persists checkpoints to the run's storage, keeps
  `keep_checkpoints` of them, and `ray.train.get_checkpoint()` hands the latest to a restarted worker group;
* in one plain process (`LocalSession`): checkpoints under a folder, the newest complete one resumed
  (notebooks, debugging, and the resume-after-kill tests).

`distribute(model, strategy, device)` wraps the model for data parallelism: DDP (gloo on CPU, NCCL on
GPU) or FSDP2 (`fully_shard` per Phi decoder layer, then the root) for the 1.3B profile.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from components.training.state import STATE_FILE

Strategy = Literal["ddp", "fsdp"]
CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d+)$")


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint after `step` optimiser steps (sorts by step)."""
    return f"checkpoint_{step:08d}"


class TrainSession(Protocol):
    """What a training worker needs from whoever runs it."""

    rank: int
    world_size: int
    device: torch.device

    @contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        """The newest complete checkpoint folder to resume from (None: start fresh), readable in the block."""

    def report(self, metrics: dict[str, Any], checkpoint: Path | None, step: int) -> None:
        """Publish metrics and (from rank 0) a checkpoint folder written by `save_train_state`; all ranks call."""


class RaySession:
    """A Ray Train worker (call inside the training function only)."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    @contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:  # noqa: D102
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield Path(folder)

    def report(self, metrics: dict[str, Any], checkpoint: Path | None, step: int) -> None:  # noqa: D102
        import ray.train

        saved = None if checkpoint is None else ray.train.Checkpoint.from_directory(str(checkpoint))
        ray.train.report(metrics, checkpoint=saved, checkpoint_dir_name=checkpoint_name(step))


class LocalSession:
    """One process, no Ray: checkpoints in `root/checkpoint_<step>`, the newest `keep` kept."""

    def __init__(self, root: str | Path, keep: int, device: str | torch.device = "cpu") -> None:
        self.root, self.keep = Path(root), keep
        self.rank, self.world_size, self.device = 0, 1, torch.device(device)
        self.reports: list[dict[str, Any]] = []

    def complete_checkpoints(self) -> list[Path]:
        """Checkpoint folders whose state.json exists (a kill mid-write leaves an incomplete one), oldest first."""
        found = [p for p in self.root.glob("checkpoint_*") if CHECKPOINT_PATTERN.match(p.name)]
        return sorted((p for p in found if (p / STATE_FILE).is_file()), key=lambda p: p.name)

    @contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:  # noqa: D102
        found = self.complete_checkpoints()
        yield found[-1] if found else None

    def report(self, metrics: dict[str, Any], checkpoint: Path | None, step: int) -> None:  # noqa: D102
        self.reports.append(dict(metrics))
        if checkpoint is None:
            return
        # Copied under a temporary name, then renamed: copytree's file order is arbitrary, so a kill during a
        # copy into the final name could leave state.json beside a truncated optimizer file.
        target = self.root / checkpoint_name(step)
        partial = self.root / f".{target.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(checkpoint, partial)
        shutil.rmtree(target, ignore_errors=True)
        partial.replace(target)
        for old in self.complete_checkpoints()[:-self.keep]:
            shutil.rmtree(old)


@contextmanager
def scratch_folder() -> Iterator[Path]:
    """A temporary folder for one checkpoint before the session persists it."""
    folder = tempfile.mkdtemp(prefix="upvla-ckpt-")
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def distribute(model: nn.Module, strategy: Strategy, device: torch.device) -> nn.Module:
    """Wrap `model` (already on `device`) for data parallelism over 2+ ranks; a single process gets it back.

    Args:
        model: the `VLAModel`, with the modules its stage does not train frozen (every trainable parameter
            gets a gradient every step, so DDP does not search for unused ones).
        strategy: `ddp`, or `fsdp` (FSDP2: every Phi decoder layer is its own unit; the rest, embeddings,
            heads, vision tower and frozen VQ, the root unit).
        device: where the model lives (gloo on CPU, NCCL on GPU: the process group's backend).
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:  # nothing to synchronise
        return model
    if strategy == "ddp":
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    for layer in model.backbone.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The `VLAModel` inside a DDP wrapper (FSDP2 modifies the module in place: it is returned as is)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


@contextmanager
def gathered(model: nn.Module) -> Iterator[nn.Module]:
    """The model with full root parameters for calls other than `forward` (prediction previews).

    Under FSDP2 this all-gathers the root unit (a collective: every rank must enter); the decoder layers
    gather themselves in their forward. For DDP or a plain module it is a no-op.
    """
    inner = unwrap(model)
    fsdp = hasattr(inner, "unshard") and hasattr(inner, "reshard")
    if fsdp:
        inner.unshard()
    try:
        yield inner
    finally:
        if fsdp:
            inner.reshard()

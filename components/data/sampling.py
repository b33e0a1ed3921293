"""Sampling for training: a distributed, epoch-aware mixing sampler and the endless `TrainBatch` stream.

`MixingSampler` draws one epoch's sample order for ALL ranks from (seed, epoch): which dataset each
position comes from (by the mixing weights) and, per dataset, a fresh permutation (cycled when a
dataset is drawn more often than its size). Rank r takes positions r, r + W, r + 2W, ... so ranks see
disjoint samples, and `set_epoch(e)` reshuffles (UP-VLA's reference never calls it, so every epoch
repeats the first order). `set_epoch(e, start=n)` skips the first n samples of the rank's order, for
resuming mid-epoch.

`make_train_batches` builds the whole input side of a training stage from its config:

    batches = make_train_batches(cfg.tune, cfg.model, tokens_dir=Path("data/tokens"),
                                 ingested_dir=Path("data/ingested"), text_tokenizer=tok,
                                 rank=ctx.get_world_rank(), world_size=ctx.get_world_size(), seed=cfg.experiment.seed)
    for step, batch in zip(range(steps), batches):      # TrainBatch(robot=RobotBatch, mmu=MMUBatch | None)
        loss, metrics = model(batch.to(device), weights)
    state = batches.state_dict()                        # {"robot": [epoch, batches], "mmu": [...]} for resume

With Ray Train, pass these loaders as they are (not through `prepare_data_loader`, which would replace
the sampler with a DistributedSampler).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, DataLoader, Sampler

from components.core.config import TrainConfig
from components.data.collate import MMUCollator, RobotCollator
from components.data.datasets import MMUDataset, RobotDataset, RobotSpec, mmu_text_budget
from model.batches import TrainBatch
from model.config import ModelConfig
from model.vocab import TokenLayout

# smallest pose std used for standardisation (CALVIN's rel_actions dimensions: 0.13-0.31)
POSE_STD_FLOOR = 1e-2
# smallest proprioception feature std (a feature that never changes, e.g. the sine of a fixed roll)
PROPRIO_STD_FLOOR = 1e-2


class MixingSampler(Sampler[int]):
    """Indices into the concatenation of datasets of `sizes`, mixed by `weights` (see the module docstring)."""

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], *, samples_per_epoch: int | None = None,
                 rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        if len(sizes) != len(weights) or not sizes or min(sizes) < 1 or min(weights) <= 0:
            raise ValueError(f"MixingSampler: need non-empty datasets with positive weights, got {sizes}, {weights}")
        if not 0 <= rank < world_size:
            raise ValueError(f"MixingSampler: rank {rank} outside world size {world_size}")
        self.sizes, self.rank, self.world_size, self.seed = list(sizes), rank, world_size, seed
        self.probs = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.total = samples_per_epoch or int(sum(sizes))
        self.per_rank = self.total // world_size  # the tail is dropped so every rank gets as many
        if self.per_rank == 0:
            raise ValueError(f"MixingSampler: {self.total} samples per epoch cannot feed {world_size} ranks")
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order; skip its first `start` samples of this rank (resume)."""
        self.epoch, self.start = epoch, start

    def epoch_order(self) -> np.ndarray:
        """(total,) global indices of the epoch, identical on every rank."""
        rng = np.random.default_rng([self.seed, self.epoch])
        source = rng.choice(len(self.sizes), size=self.total, p=self.probs)
        order = np.empty(self.total, dtype=np.int64)
        for d, size in enumerate(self.sizes):
            where = np.flatnonzero(source == d)
            cycles = -(-len(where) // size)
            perm = np.concatenate([rng.permutation(size) for _ in range(cycles)]) if cycles else np.zeros(0, int)
            order[where] = self.offsets[d] + perm[: len(where)]
        return order

    def __iter__(self) -> Iterator[int]:
        mine = self.epoch_order()[self.rank:: self.world_size][: self.per_rank]
        return iter(mine[self.start:].tolist())

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)


class TrainBatches:
    """Endless stream of `TrainBatch`: the robot and MMU loaders zipped, each moving to its next epoch when done."""

    def __init__(self, robot: DataLoader | None, mmu: DataLoader | None) -> None:
        if robot is None and mmu is None:
            raise ValueError("TrainBatches: no data (every loss weight is 0?)")
        self.loaders = {"robot": robot, "mmu": mmu}
        self.position = {name: [0, 0] for name, loader in self.loaders.items() if loader is not None}

    def pose_stats(self, min_std: float = POSE_STD_FLOOR) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and std (float32) of the robot actions' pose as the stream draws them.

        Sources are weighted by their mixing weights; std is at least `min_std` so a constant dimension
        stays finite.
        """
        return self._mixed_moments("pose_stats", lambda s: s.pose_moments(), min_std)

    def proprio_stats(self, min_std: float = PROPRIO_STD_FLOOR) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and std (float32) of the proprioception features (model/proprio.py) as drawn.

        Weighted by the mixing weights like `pose_stats`; std at least `min_std`.
        """
        return self._mixed_moments("proprio_stats", lambda s: s.proprio_moments(), min_std)

    def _mixed_moments(self, name: str, moments_of, min_std: float) -> tuple[np.ndarray, np.ndarray]:
        loader = self.loaders["robot"]
        if loader is None:
            raise ValueError(f"TrainBatches.{name}: the stage loads no robot data")
        sets, probs = loader.dataset.datasets, loader.sampler.probs
        moments = [moments_of(s) for s in sets]
        mean = sum(p * m for p, (m, _) in zip(probs, moments, strict=True))
        square = sum(p * q for p, (_, q) in zip(probs, moments, strict=True))
        std = np.sqrt(np.maximum(square - mean**2, 0.0))
        return mean.astype(np.float32), np.maximum(std, min_std).astype(np.float32)

    def state_dict(self) -> dict[str, list[int]]:
        """[epoch, batches consumed in it] per loader."""
        return {name: list(pos) for name, pos in self.position.items()}

    def load_state_dict(self, state: dict[str, list[int]]) -> None:
        """Continue from a `state_dict` (the next batch is the one after the last consumed)."""
        self.position = {name: list(state[name]) for name in self.position}

    def _stream(self, name: str) -> Iterator[Any]:
        loader = self.loaders[name]
        while True:
            epoch, done = self.position[name]
            loader.sampler.set_epoch(epoch, start=done * loader.batch_size)
            if done == 0 and len(loader) == 0:
                raise ValueError(f"TrainBatches: the {name} data has {len(loader.sampler)} samples per rank, "
                                 f"fewer than one batch of {loader.batch_size}")
            for batch in loader:
                self.position[name][1] += 1
                yield batch
            self.position[name] = [epoch + 1, 0]

    def __iter__(self) -> Iterator[TrainBatch]:
        streams = {name: self._stream(name) for name in self.position}
        while True:
            yield TrainBatch(robot=next(streams["robot"]) if "robot" in streams else None,
                             mmu=next(streams["mmu"]) if "mmu" in streams else None)


def make_train_batches(cfg: TrainConfig, model: ModelConfig, *, tokens_dir: Path, ingested_dir: Path,
                       text_tokenizer: Any, rank: int = 0, world_size: int = 1, seed: int = 0, num_workers: int = 0,
                       split: str = "training") -> TrainBatches:
    """The input stream of a training stage (`pretrain:` / `tune:` section); unused data is not loaded.

    Robot data is read only when λ_PRE or λ_ACT > 0 (future codes only for λ_PRE, actions only for
    λ_ACT, scene images only with mmu_condition); the VQA table only when λ_MMU > 0.
    """
    layout = TokenLayout.from_config(model, text_tokenizer.eos_token_id)
    robot = None
    if cfg.lambda_pre > 0 or cfg.lambda_act > 0:
        spec = RobotSpec.of(model, lambda_pre=cfg.lambda_pre, lambda_act=cfg.lambda_act,
                            mmu_condition=cfg.mmu_condition)
        sets = [RobotDataset(tokens_dir, ingested_dir, spec, sources=(name,), split=split,
                             task_repeats=cfg.task_repeats) for name in cfg.robot_mix]
        found = {task for s in sets for task in s.tasks}
        for task in sorted(set(cfg.task_repeats) - found):  # not an error: a small dataset may lack a task
            print(f"task_repeats.{task}: no {split} language window of that task in {ingested_dir}/windows "
                  f"({', '.join(cfg.robot_mix)}), so it changes nothing (misspelt?)", flush=True)
        sampler = MixingSampler([len(s) for s in sets], list(cfg.robot_mix.values()), rank=rank,
                                world_size=world_size, seed=seed)
        robot = DataLoader(ConcatDataset(sets), batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                           collate_fn=RobotCollator(text_tokenizer, layout, model), num_workers=num_workers)
    mmu = None
    if cfg.lambda_mmu > 0:
        if cfg.mmu_batch_size == 0:
            raise ValueError("mmu_batch_size: must be > 0 when lambda_mmu > 0")
        data = MMUDataset(ingested_dir, text_tokenizer, eos_id=layout.eos_id, max_text_len=mmu_text_budget(model),
                          image_size=model.vision_image_size)
        sampler = MixingSampler([len(data)], [1.0], rank=rank, world_size=world_size, seed=seed + 1)
        mmu = DataLoader(data, batch_size=cfg.mmu_batch_size, sampler=sampler, drop_last=True,
                         collate_fn=MMUCollator(layout), num_workers=num_workers)
    return TrainBatches(robot, mmu)

"""The inputs of a training stage: where they live (`StageInputs`) and the worker's batch stream.

The datasets, the mixing sampler and the resumable position are the data pipeline's
(components/data/datasets.py, components/data/sampling.py); this module only adapts them to the loop:
`next_batch()`, a JSON-able `state_dict()` saved in every checkpoint, and a fixed preview batch for the
future-frame grids (drawn from the dataset directly, so previews never move the stream).

    inputs = StageInputs.of(tokens_dir="data/tokens", ingested_dir="data/ingested", vq_dir="artifacts/vq",
                            text_tokenizer_dir="artifacts/text_tokenizer", init_model="artifacts/pretrain/model")
    stream = make_train_stream(cfg.tune, cfg.model, inputs, tokenizer, seed=0, rank=0, world_size=1)
    batch = stream.next_batch()                      # TrainBatch on CPU
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.core.config import TrainConfig
from components.data.sampling import TrainBatches, make_train_batches
from model.batches import RobotBatch, TrainBatch
from model.config import ModelConfig

PREVIEW_SAMPLES = 4


@dataclass(frozen=True)
class StageInputs:
    """Absolute paths of a stage's inputs (workers may run in another working directory or node)."""

    # pre-tokenized frames (the pretokenize stage's data/tokens)
    tokens_dir: str
    # ingested tables: language windows and VQA (the ingest stage's data/ingested)
    ingested_dir: str
    # the VQ tokenizer folder (the tokenizer stage's artifacts/vq); used when starting from the backbone
    vq_dir: str
    # the text tokenizer folder (artifacts/text_tokenizer); used when starting from the backbone
    text_tokenizer_dir: str
    # a VLAModel folder to start from (stage 2: stage 1's artifacts/pretrain/model); None = the backbone
    init_model: str | None

    @classmethod
    def of(cls, *, tokens_dir: str | Path, ingested_dir: str | Path, vq_dir: str | Path,
           text_tokenizer_dir: str | Path, init_model: str | Path | None) -> StageInputs:
        """Resolve and check the folders, with an error naming the missing one."""
        named = {"tokens_dir": tokens_dir, "ingested_dir": ingested_dir, "vq_dir": vq_dir,
                 "text_tokenizer_dir": text_tokenizer_dir, "init_model": init_model}
        for name, path in named.items():
            if path is not None and not Path(path).is_dir():
                raise FileNotFoundError(f"{name}: {path} is not a folder (run the stage that writes it first)")
        return cls(**{k: None if v is None else str(Path(v).resolve()) for k, v in named.items()})


class TrainStream:
    """Endless `TrainBatch`es of one worker, resumable at batch granularity."""

    def __init__(self, batches: TrainBatches) -> None:
        self.batches = batches
        self._iter: Iterator[TrainBatch] | None = None

    def next_batch(self) -> TrainBatch:
        """The next micro-batch (CPU tensors)."""
        if self._iter is None:
            self._iter = iter(self.batches)
        return next(self._iter)

    def state_dict(self) -> dict[str, Any]:
        """Per loader [epoch, batches consumed]: the data position saved in checkpoints."""
        return self.batches.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the position of a `state_dict` (only before the first `next_batch`)."""
        if self._iter is not None:
            raise RuntimeError("TrainStream: restore the position before drawing batches")
        self.batches.load_state_dict(state)

    def preview_batch(self) -> RobotBatch | None:
        """A fixed robot batch (evenly spaced samples of the dataset) for future-frame grids; None without one."""
        loader = self.batches.loaders.get("robot")
        if loader is None:
            return None
        dataset = loader.dataset
        picks = np.linspace(0, len(dataset) - 1, min(PREVIEW_SAMPLES, len(dataset))).round().astype(int)
        return loader.collate_fn([dataset[int(i)] for i in picks])


def make_train_stream(cfg: TrainConfig, model: ModelConfig, inputs: StageInputs, text_tokenizer: Any, *,
                      seed: int, rank: int, world_size: int) -> TrainStream:
    """The batch stream of worker `rank` of `world_size` for a stage (`pretrain:` / `tune:` section)."""
    batches = make_train_batches(cfg, model, tokens_dir=Path(inputs.tokens_dir), ingested_dir=Path(inputs.ingested_dir),
                                 text_tokenizer=text_tokenizer, rank=rank, world_size=world_size, seed=seed,
                                 num_workers=cfg.loader_workers)
    return TrainStream(batches)

"""Training-input throughput: robot samples/s from pre-tokenized shards vs on-the-fly VQ encoding, one run.

Both paths build the same `RobotBatch`es (same samples in the same order, `tune`-shaped: current and
future codes, action chunks, instructions) at the sizes of params.yaml:
* pre-tokenized: `RobotDataset` reads codes from data/tokens and `RobotCollator` batches them;
* on-the-fly (what the reference does every training step): the same samples, but the current and
  future frames' image bytes (held in memory, which favours this path) are decoded, resized and
  VQ-encoded for every batch.
The first batch of both paths is checked to be identical. Run after `dvc repro pretokenize`:

    .venv/bin/python benchmarks/input_pipeline.py
    .venv/bin/python benchmarks/input_pipeline.py --ingested /tmp/x/ingested --tokens /tmp/x/tokens --vq /tmp/x/vq
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from components.core.config import add_config_args, config_from_args
from components.data.collate import RobotCollator
from components.data.datasets import RobotDataset, RobotSpec, frame_keys
from components.data.frame_encoder import encode_blobs
from components.data.tables import read_table
from model.vocab import TokenLayout, load_text_tokenizer
from model.vq_tokenizer import VQTokenizer


class OnTheFly:
    """The same samples as a `RobotDataset`, with codes VQ-encoded from image bytes at batch time."""

    def __init__(self, ds: RobotDataset, ingested: Path, tok: VQTokenizer) -> None:
        frames = read_table(ingested / "frames", columns=["dataset", "split", "episode", "step", "rgb_static"])
        frames = frames.filter(pc.and_(pc.equal(frames.column("split"), "training"),
                                       pc.is_in(frames.column("dataset"), pa.array(list(ds.sources)))))
        keys = frame_keys(frames, ds.sources)
        images = frames.column("rgb_static").to_pylist()
        self.image_of = {int(k): images[i] for i, k in enumerate(keys)}
        self.ds, self.tok = ds, tok

    def samples(self, indices: np.ndarray) -> list[dict]:
        """Samples whose codes come from encoding the current and future frames now."""
        samples = [self.ds[int(i)] for i in indices]
        rows = self.ds.sample_row[indices]
        last = self.ds.window_rows[self.ds.sample_window[indices], 1]
        future = np.minimum(rows + self.ds.spec.delta_t, last)
        blobs = [self.image_of[int(self.ds.keys[r])] for r in np.concatenate([rows, future])]
        codes = encode_blobs(self.tok, blobs)
        for k, sample in enumerate(samples):
            sample["current_codes"], sample["future_codes"] = codes[k], codes[len(samples) + k]
        return samples


def throughput(make_batch, batches: list[np.ndarray]) -> float:
    """Samples per second over all batches (after one warm-up batch)."""
    make_batch(batches[0])
    start = time.perf_counter()
    for idx in batches:
        make_batch(idx)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--ingested", default="data/ingested")
    parser.add_argument("--tokens", default="data/tokens")
    parser.add_argument("--vq", default="artifacts/vq")
    parser.add_argument("--text-tokenizer", default="artifacts/text_tokenizer")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per path")
    args = parser.parse_args()
    cfg = config_from_args(args)
    text = load_text_tokenizer(args.text_tokenizer, cfg.model.text_vocab_size)
    spec = RobotSpec.of(cfg.model, lambda_pre=1.0, lambda_act=1.0, mmu_condition=False)
    ds = RobotDataset(Path(args.tokens), Path(args.ingested), spec, sources=tuple(cfg.tune.robot_mix))
    collate = RobotCollator(text, TokenLayout.from_config(cfg.model, text.eos_token_id), cfg.model)
    fly = OnTheFly(ds, Path(args.ingested), VQTokenizer.from_pretrained(args.vq).eval())
    rng = np.random.default_rng(0)
    size = cfg.tune.batch_size
    batches = [rng.choice(len(ds), size=size, replace=len(ds) < size) for _ in range(args.batches)]
    a, b = collate([ds[int(i)] for i in batches[0]]), collate(fly.samples(batches[0]))
    assert torch.equal(a.current_codes, b.current_codes) and torch.equal(a.future_codes, b.future_codes)
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}; "
          f"{len(ds)} samples, batch {size}, vq {cfg.model.vq.image_size}px -> {cfg.model.vq.tokens_per_image} codes")
    pre = throughput(lambda idx: collate([ds[int(i)] for i in idx]), batches)
    otf = throughput(lambda idx: collate(fly.samples(idx)), batches)
    print(f"pre-tokenized shards : {pre:10.1f} samples/s")
    print(f"on-the-fly VQ encode : {otf:10.1f} samples/s")
    print(f"speed-up             : {pre / otf:10.1f}x   (load average after: {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()

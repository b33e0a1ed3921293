"""Training-input throughput: robot samples/s from pre-tokenized shards vs on-the-fly VQ encoding, one run.

Both paths build the same `RobotBatch`es (same samples in the same order, `tune`-shaped: current and
future codes, action chunks, instructions) at the sizes of params.yaml:
* pre-tokenized: `RobotDataset` reads codes from data/tokens and `RobotCollator` batches them;
* on-the-fly (what the reference does every training step): the same samples, but the current and
  future frames' image bytes (held in memory, which favours this path) are decoded, resized and
  VQ-encoded for every batch (every view the model reads, as the shards hold them).
The first batch of both paths is checked to be identical.

Then the stream the `tune` stage itself reads (components/training/inputs.make_train_stream with the tune
section: robot batch, MMU batch, and with tune.mmu_condition the CLIP-sized scene image of every sample,
which `LazyBlobs` reads from 16-row Parquet groups): batches/s with the row-group cache at 8 groups (what
it held before the byte budget) and at `LAZY_CACHE_BYTES`, each over the same batches from a fresh stream.
Run after `dvc repro pretokenize`:

    .venv/bin/python benchmarks/input_pipeline.py
    .venv/bin/python benchmarks/input_pipeline.py --ingested /tmp/x/ingested --tokens /tmp/x/tokens --vq /tmp/x/vq
    .venv/bin/python benchmarks/input_pipeline.py --smoke     # seconds: profiles/smoke.yaml, 2 batches per path

--smoke still reads the data named by the path flags; tests/test_benchmarks.py passes the small data the
test fixtures build with the real ingest, tokenizer and pretokenize stages (tests/fixtures/pipeline_data.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from components.core.config import add_config_args, config_from_args
from components.data import tables
from components.data.collate import RobotCollator
from components.data.datasets import RobotDataset, RobotSpec, frame_keys
from components.data.frame_encoder import encode_blobs
from components.data.tables import read_table
from components.training.inputs import StageInputs, make_train_stream
from model.vocab import TokenLayout, load_text_tokenizer
from model.vq_tokenizer import VQTokenizer

# --smoke: the same measurements at sizes that take seconds; explicit flags still win
SMOKE = ["--profile", "smoke", "--batches", "2", "--stream-batches", "3"]


class OnTheFly:
    """The same samples as a `RobotDataset`, with codes VQ-encoded from image bytes at batch time.

    Every view the model reads is encoded, in the shards' order (components/data/frame_encoder.py):
    static, then with `model.num_views` = 2 the gripper view, whose codes the static view's stand in for
    where a frame has no gripper camera (Bridge), as `RobotDataset` does.
    """

    def __init__(self, ds: RobotDataset, ingested: Path, tok: VQTokenizer) -> None:
        self.views = ("rgb_static", "rgb_gripper")[: ds.spec.num_views]
        frames = read_table(ingested / "frames", columns=["dataset", "split", "episode", "step", *self.views])
        frames = frames.filter(pc.and_(pc.equal(frames.column("split"), "training"),
                                       pc.is_in(frames.column("dataset"), pa.array(list(ds.sources)))))
        keys = frame_keys(frames, ds.sources)
        columns = [frames.column(view).to_pylist() for view in self.views]
        self.images_of = {int(k): [images[i] for images in columns] for i, k in enumerate(keys)}
        self.ds, self.tok = ds, tok

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """(n, num_views * tokens_per_image) codes of the dataset's frames `rows`, views concatenated."""
        images = [self.images_of[int(self.ds.keys[r])] for r in rows]
        static = encode_blobs(self.tok, [views[0] for views in images])
        if len(self.views) == 1:
            return static
        has_gripper = np.array([views[1] is not None for views in images])
        gripper = static.copy()
        gripper[has_gripper] = encode_blobs(self.tok, [views[1] for views in images if views[1] is not None])
        return np.concatenate([static, gripper], axis=1)

    def samples(self, indices: np.ndarray) -> list[dict]:
        """Samples whose codes come from encoding the current and future frames now."""
        samples = [self.ds[int(i)] for i in indices]
        rows = self.ds.sample_row[indices]
        last = self.ds.window_rows[self.ds.sample_window[indices], 1]
        future = np.minimum(rows + self.ds.spec.delta_t, last)
        codes = self.encode(np.concatenate([rows, future]))
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


def stream_rate(cfg, args: argparse.Namespace, text, batches: int, cache_bytes: int) -> float:
    """Batches/s of a fresh `tune` stream (seed 0, one rank) over `batches` batches, the first untimed."""
    tables.LAZY_CACHE_BYTES = cache_bytes  # LazyBlobs read it when the stream's datasets are built
    inputs = StageInputs.of(tokens_dir=args.tokens, ingested_dir=args.ingested, vq_dir=args.vq,
                            text_tokenizer_dir=args.text_tokenizer, init_model=None)
    stream = make_train_stream(cfg.tune, cfg.model, inputs, text, seed=0, rank=0, world_size=1)
    stream.next_batch()
    start = time.perf_counter()
    for _ in range(batches):
        stream.next_batch()
    return batches / (time.perf_counter() - start)


def old_cache_bytes(tokens: Path) -> int:
    """8 of the largest scene-image row groups: at least the cache `LazyBlobs` held (8 groups) before its budget.

    (Bridge's groups hold no scene images, so an average group would undersize the old cache.)
    """
    sizes = []
    for path in tables.part_files(tokens / "frames"):
        meta = pq.ParquetFile(path).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            sizes += [group.column(c).total_uncompressed_size for c in range(group.num_columns)
                      if group.column(c).path_in_schema == "scene_image"]
    return 8 * max(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--ingested", default="data/ingested")
    parser.add_argument("--tokens", default="data/tokens")
    parser.add_argument("--vq", default="artifacts/vq")
    parser.add_argument("--text-tokenizer", default="artifacts/text_tokenizer")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per path")
    parser.add_argument("--stream-batches", type=int, default=200, help="tune-stream batches timed per cache size")
    parser.add_argument("--smoke", action="store_true", help=f"tiny sizes, seconds: {' '.join(SMOKE)}")
    args = parser.parse_args()
    if args.smoke:
        args = parser.parse_args([*SMOKE, *sys.argv[1:]])
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
    if not (torch.equal(a.current_codes, b.current_codes) and torch.equal(a.future_codes, b.future_codes)):
        raise SystemExit(f"input_pipeline: the on-the-fly codes {tuple(b.current_codes.shape)} differ from the "
                         f"shards' {tuple(a.current_codes.shape)}: the two paths no longer build the same batches")
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}; "
          f"{len(ds)} samples, batch {size}, {'+'.join(fly.views)} at vq {cfg.model.vq.image_size}px -> "
          f"{cfg.model.vq.tokens_per_image} codes each")
    pre = throughput(lambda idx: collate([ds[int(i)] for i in idx]), batches)
    otf = throughput(lambda idx: collate(fly.samples(idx)), batches)
    print(f"pre-tokenized shards : {pre:10.1f} samples/s")
    print(f"on-the-fly VQ encode : {otf:10.1f} samples/s")
    print(f"speed-up             : {pre / otf:10.1f}x   (load average after: {os.getloadavg()[0]:.2f})")
    old, new = old_cache_bytes(Path(args.tokens)), tables.LAZY_CACHE_BYTES
    before = stream_rate(cfg, args, text, args.stream_batches, old)
    after = stream_rate(cfg, args, text, args.stream_batches, new)
    print(f"tune stream ({args.stream_batches} batches of {cfg.tune.batch_size} robot + {cfg.tune.mmu_batch_size} MMU, "
          f"mmu_condition {cfg.tune.mmu_condition}):")
    print(f"  row-group cache {old / 2**20:7.2f} MiB (8 groups, before) : {before:8.2f} batches/s "
          f"({1000 / before:6.1f} ms each)")
    print(f"  row-group cache {new / 2**20:7.2f} MiB (LAZY_CACHE_BYTES) : {after:8.2f} batches/s "
          f"({1000 / after:6.1f} ms each)")
    print(f"  speed-up                                   : {after / before:8.2f}x")


if __name__ == "__main__":
    main()

"""`pretokenize` stage: every ingested frame -> VQ codes, with Ray Data, into resumable Parquet shards.

Frames are numbered in the frames table's order (part files by name, rows in file order) and cut into
shards of `pretokenize.shard_size` frames; shard i always holds the same frames, so the output does not
depend on worker count or timing. Only shards without a finished file are encoded:

    pieces of pending shards (at most one row group each)
        --map_batches(EncodePieces, batch_size=1, ActorPoolStrategy(num_workers), num_cpus=cpus_per_worker)-->
        code rows (each piece read, then encoded `pretokenize.batch_size` frames at a time)
        --driver--> data/tokens/frames/shard-<i>.parquet, written atomically once complete

One piece per actor call keeps every actor busy. (A separate read step and `map_batches(EncodeFrames,
batch_size=64)` were fused by Ray Data into one actor operator whose batch size then counted pieces: the
108 pieces of the default became 2 calls of 64 row groups, both sent to the first actor ready, so one
core encoded while the other idled.)

`manifest.json` records what the shards were made from (VQ weights hash, model settings, input files);
a run with a different manifest discards the old shards instead of mixing them. Schema:
components/data/tables.py `TOKENS_SCHEMA`. Encoding actors get fractional CPUs so Ray Data's read tasks
still fit on a 2-CPU machine (actors of one whole CPU each would take both, and the reads would never run).

    summary = pretokenize_frames(cfg.pretokenize, cfg.model, Path("artifacts/vq"), Path("data/ingested"),
                                 Path("data/tokens"))
    python -m workflows.pretokenize                     # the DVC stage
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from tqdm import tqdm

from components.core.config import PretokenizeConfig
from components.core.ray_runtime import require_ray
from components.core.tracking import NULL_LOGGER, MetricLogger
from components.data.frame_encoder import EncodeFrames, encoder_settings
from components.data.tables import FRAMES, LAZY_ROW_GROUP_SIZE, ROW_GROUP_SIZE, TOKENS_SCHEMA, part_files, write_table
from model.config import ModelConfig
from model.vq_tokenizer import WEIGHTS_NAME

READ_COLUMNS = ["dataset", "split", "episode", "step", "rgb_static", "rgb_gripper", "actions", "description"]


@dataclass(frozen=True)
class Shard:
    """Frames [start, start + rows) of the table, as (file, first row, stop row) pieces."""

    index: int
    start: int
    rows: int
    pieces: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class PretokenizeSummary:
    """What one run did (also `metrics/pretokenize.json`)."""

    shards: int
    shards_encoded: int
    shards_skipped: int
    frames: int
    frames_encoded: int


def plan_shards(frames_dir: Path, shard_size: int) -> list[Shard]:
    """Cut the frames table, in order, into shards of `shard_size` frames (the last may be shorter)."""
    counts = [(str(p), pq.ParquetFile(p).metadata.num_rows) for p in part_files(frames_dir)]
    total = sum(n for _, n in counts)
    shards = []
    for index, start in enumerate(range(0, total, shard_size)):
        stop, pieces, offset = min(start + shard_size, total), [], 0
        for path, n in counts:
            lo, hi = max(start, offset), min(stop, offset + n)
            if lo < hi:
                pieces.append((path, lo - offset, hi - offset))
            offset += n
        shards.append(Shard(index, start, stop - start, tuple(pieces)))
    return shards


def shard_path(out_dir: Path, index: int) -> Path:
    """Where shard `index` goes."""
    return out_dir / FRAMES / f"shard-{index:05d}.parquet"


def make_manifest(model_cfg: ModelConfig, vq_dir: Path, frames_dir: Path, shard_size: int) -> dict[str, Any]:
    """What the shards depend on: VQ weights, encoder settings, shard size, and the input files' sizes."""
    inputs = [[p.name, p.stat().st_size, pq.ParquetFile(p).metadata.num_rows] for p in part_files(frames_dir)]
    return {"vq_sha256": hashlib.sha256((vq_dir / WEIGHTS_NAME).read_bytes()).hexdigest(),
            "encoder": encoder_settings(model_cfg), "shard_size": shard_size, "row_group_size": LAZY_ROW_GROUP_SIZE,
            "inputs": inputs}


def prepare_output(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Keep finished shards only if they were made from the same inputs; otherwise start over."""
    path = out_dir / "manifest.json"
    # compared in JSON form: tuples in the manifest (model.vq.channel_mult) read back as lists
    if path.is_file() and json.loads(path.read_text()) != json.loads(json.dumps(manifest)):
        print(f"pretokenize: {path} differs from this run's inputs; discarding the old shards")
        for old in (out_dir / FRAMES).glob("*.parquet"):
            old.unlink()
    (out_dir / FRAMES).mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1))


def read_rows(path: str, lo: int, hi: int) -> pa.Table:
    """Rows [lo, hi) of a Parquet file, reading only the row groups that hold them."""
    meta = pq.ParquetFile(path).metadata
    groups, first, offset = [], None, 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if offset < hi and offset + n > lo:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    table = pq.ParquetFile(path).read_row_groups(groups, columns=READ_COLUMNS)
    return table.slice(lo - first, hi - lo)


def read_pieces(batch: pa.Table) -> pa.Table:
    """Ray Data UDF: piece rows (file, lo, hi, shard, start) -> the frames they cover, tagged with shard/position."""
    tables = []
    columns = (batch.column(c).to_pylist() for c in ("file", "lo", "hi", "shard", "start"))
    for file, lo, hi, shard, start in zip(*columns, strict=True):
        rows = read_rows(file, lo, hi)
        rows = rows.append_column("shard", pa.array([shard] * len(rows), pa.int32()))
        tables.append(rows.append_column("position", pa.array(range(start, start + len(rows)), pa.int64())))
    return pa.concat_tables(tables)


class EncodePieces:
    """Ray Data actor UDF: pieces (file, lo, hi, shard, start) -> their frames' rows of the tokens table."""

    def __init__(self, batch_size: int, **encoder: Any) -> None:
        self.encode, self.batch_size = EncodeFrames(**encoder), batch_size

    def __call__(self, pieces: pa.Table) -> pa.Table:
        """Read the pieces' frames and encode them `batch_size` at a time."""
        rows = read_pieces(pieces)
        return pa.concat_tables([self.encode(rows.slice(i, self.batch_size))
                                 for i in range(0, len(rows), self.batch_size)])


def pretokenize_frames(cfg: PretokenizeConfig, model_cfg: ModelConfig, vq_dir: Path, ingested_dir: Path,
                       out_dir: Path, *, log: MetricLogger = NULL_LOGGER) -> PretokenizeSummary:
    """The stage: encode every pending shard of `ingested_dir/frames` into `out_dir/frames`.

    Args:
        cfg: `pretokenize:` (batch_size, num_workers, cpus_per_worker, gpus_per_worker, shard_size).
        model_cfg: `model:` (num_views, vision_image_size, vq) - must match the VQ folder.
        vq_dir: the tokenizer stage's VQ folder.
        ingested_dir: the ingest stage's output.
        out_dir: `data/tokens`; finished shards there are kept when the manifest matches.
        log: where the counts go.
    """
    require_ray("pretokenize")
    frames_dir = ingested_dir / FRAMES
    prepare_output(out_dir, make_manifest(model_cfg, vq_dir, frames_dir, cfg.shard_size))
    shards = plan_shards(frames_dir, cfg.shard_size)
    pending = [s for s in shards if not shard_path(out_dir, s.index).is_file()]
    if pending:
        encode_shards(cfg, model_cfg, vq_dir, pending, out_dir)
    summary = PretokenizeSummary(shards=len(shards), shards_encoded=len(pending),
                                 shards_skipped=len(shards) - len(pending), frames=sum(s.rows for s in shards),
                                 frames_encoded=sum(s.rows for s in pending))
    log.log_metrics({f"pretokenize/{k}": float(v) for k, v in summary.__dict__.items()})
    return summary


def encode_shards(cfg: PretokenizeConfig, model_cfg: ModelConfig, vq_dir: Path, pending: list[Shard],
                  out_dir: Path) -> None:
    """Run the Ray Data pipeline over the pending shards and write each shard as soon as it is complete."""
    items = []  # work items of at most one row group each, so every actor gets work
    for shard in pending:
        start = shard.start
        for path, lo, hi in shard.pieces:
            a = lo
            while a < hi:
                b = min(hi, (a // ROW_GROUP_SIZE + 1) * ROW_GROUP_SIZE)
                items.append({"file": path, "lo": a, "hi": b, "shard": shard.index, "start": start})
                start, a = start + b - a, b
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(EncodePieces, batch_size=1, batch_format="pyarrow",
                        fn_constructor_kwargs={"batch_size": cfg.batch_size, "vq_dir": str(vq_dir),
                                               "model_cfg": model_cfg, "threads": max(1, int(cfg.cpus_per_worker)),
                                               "device": "cuda" if cfg.gpus_per_worker > 0 else "cpu"},
                        compute=ray.data.ActorPoolStrategy(size=cfg.num_workers), num_cpus=cfg.cpus_per_worker,
                        num_gpus=cfg.gpus_per_worker)
    expected = {s.index: s.rows for s in pending}
    buffers: dict[int, list[pa.Table]] = {i: [] for i in expected}
    with tqdm(total=len(pending), desc="pretokenize shards", unit="shard") as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for index in set(batch.column("shard").to_pylist()):
                buffers[index].append(batch.filter(pc.equal(batch.column("shard"), index)))
                if sum(len(t) for t in buffers[index]) == expected[index]:
                    table = pa.concat_tables(buffers.pop(index)).sort_by("position").cast(TOKENS_SCHEMA)
                    write_table(table, shard_path(out_dir, index), LAZY_ROW_GROUP_SIZE)
                    bar.update(1)
    if buffers:
        raise RuntimeError(f"pretokenize: shards {sorted(buffers)} did not receive all their frames")

"""Parquet tables of the data pipeline: schemas, sharded writing, reading, image bytes.

On-disk layout (every table is a folder of `part-*.parquet` files, read in sorted name order):

    data/ingested/frames/    FRAMES   one row per camera frame (CALVIN and Bridge)
    data/ingested/windows/   WINDOWS  one row per language-labelled window of an episode
    data/ingested/vqa/       VQA      one row per LLaVA-style image + conversation
    data/ingested/quarantine.json, quarantine.txt   the records left out and why
    data/tokens/frames/      TOKENS   one row per frame: VQ codes + what training needs (`TOKENS_SCHEMA`)

A frame is identified by (dataset, split, episode, step); `step` counts from 0 in its episode and a
window's [start_step, end_step] is inclusive, as CALVIN's `ep_start_end_ids` and `info.indx` are.
Images are stored as encoded bytes: CALVIN frames (raw uint8 arrays in the npz files) as lossless PNG,
so the tokenizer sees exactly the recorded pixels at ~1/10 of the raw size (decode: ~0.5 ms per
200x200 frame); Bridge and LLaVA images keep their source JPEG bytes untouched (no second lossy pass).
Vectors are variable-length lists with their length documented per column: pyarrow 25 cannot read back
a null entry of a fixed-size list column from Parquet ("Expected all lists to be of size=7").
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

FRAMES, WINDOWS, VQA = "frames", "windows", "vqa"  # table folder names
ROW_GROUP_SIZE = 256  # rows per Parquet row group: the unit a reader can fetch without the whole file
# row groups of the tables whose images training reads one sample at a time (vqa, tokens): `LazyBlobs`
# then fetches 16 images per random access instead of loading a whole image column into memory
LAZY_ROW_GROUP_SIZE = 16
# RAM a `LazyBlobs` may keep its read row groups in, per column and process (the default's CLIP-sized scene
# images are ~105 MB, so they are read once; paper-scale columns stay bounded by it)
LAZY_CACHE_BYTES = 256 * 2**20

_KEY = [pa.field("dataset", pa.string(), nullable=False),  # "calvin" | "bridge"
        pa.field("split", pa.string(), nullable=False),  # "training" | "validation" (Bridge: "training")
        pa.field("episode", pa.int32(), nullable=False),  # CALVIN: row of ep_start_end_ids; Bridge: trajectory
        pa.field("step", pa.int32(), nullable=False)]  # frame index within its episode, from 0

FRAMES_SCHEMA = pa.schema([
    *_KEY,
    pa.field("frame_id", pa.int64(), nullable=False),  # CALVIN: the global id of episode_XXXXXXX.npz; Bridge: t
    pa.field("source", pa.string(), nullable=False),  # file or folder it came from, relative to the dataset root
    pa.field("scene", pa.string()),  # CALVIN scene (scene_info.npy, e.g. "calvin_scene_A"); null if unknown
    pa.field("rgb_static", pa.binary(), nullable=False),  # PNG (CALVIN) or source JPEG (Bridge images0) bytes
    pa.field("rgb_gripper", pa.binary()),  # PNG; null for Bridge (one camera)
    pa.field("actions", pa.list_(pa.float32())),  # (7,) training action: CALVIN rel_actions, Bridge policy_out
    pa.field("abs_actions", pa.list_(pa.float32())),  # (7,) CALVIN `actions` (absolute pose of the next frame)
    pa.field("robot_obs", pa.list_(pa.float32())),  # CALVIN robot_obs (15,); Bridge obs_dict state (7,)
    pa.field("scene_obs", pa.list_(pa.float32())),  # (24,) CALVIN only
    pa.field("description", pa.string()),  # ground-truth scene description from scene_obs (CALVIN only)
])

WINDOWS_SCHEMA = pa.schema([
    *_KEY[:3],
    pa.field("start_step", pa.int32(), nullable=False),  # first frame of the window (inclusive)
    pa.field("end_step", pa.int32(), nullable=False),  # last frame of the window (inclusive)
    pa.field("instruction", pa.string(), nullable=False),
    pa.field("task", pa.string()),  # CALVIN task name; null for Bridge
    pa.field("source", pa.string(), nullable=False),
])

VQA_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("image", pa.binary(), nullable=False),  # the image file's bytes, as found
    pa.field("image_path", pa.string(), nullable=False),  # relative to the LLaVA folder
    pa.field("questions", pa.list_(pa.string()), nullable=False),  # human turns, "<image>" placeholder removed
    pa.field("answers", pa.list_(pa.string()), nullable=False),  # gpt turns, same length as questions
])


# `data/tokens/frames`: everything a training sample needs per frame, no camera images. `shard` and
# `position` give the row's place in the pretokenize plan; codes are raw codebook indices (int16), one
# list of vq.tokens_per_image per view: `gripper_codes` only with model.num_views = 2 and a gripper view;
# `scene_image` is the static frame at the CLIP input size (PNG), only where a description exists (the
# MMU-conditioned prompt needs both).
TOKENS_SCHEMA = pa.schema([
    *_KEY, pa.field("shard", pa.int32(), nullable=False), pa.field("position", pa.int64(), nullable=False),
    pa.field("static_codes", pa.list_(pa.int16()), nullable=False), pa.field("gripper_codes", pa.list_(pa.int16())),
    FRAMES_SCHEMA.field("actions"), FRAMES_SCHEMA.field("description"), pa.field("scene_image", pa.binary()),
])


class PartWriter:
    """Writes rows into `<folder>/<prefix>-<n>.parquet` files of at most `rows_per_file` rows each."""

    def __init__(self, folder: Path, prefix: str, schema: pa.Schema, rows_per_file: int,
                 row_group_size: int = ROW_GROUP_SIZE) -> None:
        self.folder, self.prefix, self.schema, self.rows_per_file = Path(folder), prefix, schema, rows_per_file
        self.row_group_size = row_group_size
        self.folder.mkdir(parents=True, exist_ok=True)
        self._rows: list[dict[str, Any]] = []
        self.files: list[Path] = []
        self.rows_written = 0

    def add(self, row: Mapping[str, Any]) -> None:
        """Buffer one row (a dict with every schema column); flushes a full file."""
        self._rows.append(dict(row))
        if len(self._rows) >= self.rows_per_file:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as the next part file (nothing when empty)."""
        if not self._rows:
            return
        path = self.folder / f"{self.prefix}-{len(self.files):05d}.parquet"
        write_table(pa.Table.from_pylist(self._rows, schema=self.schema), path, self.row_group_size)
        self.files.append(path)
        self.rows_written += len(self._rows)
        self._rows = []


def write_table(table: pa.Table, path: Path, row_group_size: int = ROW_GROUP_SIZE) -> None:
    """Write a Parquet file atomically (temporary name, then rename), so a crash leaves no partial file."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")
    tmp.replace(path)


def part_files(folder: Path) -> list[Path]:
    """The part files of a table folder, in name order; an error naming the folder when there are none."""
    files = sorted(Path(folder).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no Parquet part files (run the stage that writes it)")
    return files


def read_table(folder: Path, columns: Sequence[str] | None = None, filters: Any = None) -> pa.Table:
    """Read a whole table folder (optionally some columns / a pyarrow filter expression)."""
    tables = [pq.read_table(f, columns=list(columns) if columns else None, filters=filters)
              for f in part_files(folder)]
    return pa.concat_tables(tables)


class LazyBlobs:
    """A binary column of a table folder, read on demand one row group at a time (random access, bounded RAM).

    Row r is the r-th row of the folder's part files in name order. Row groups once read stay cached up to
    `cache_bytes` in all (the least recently used leave first), so a column that fits is read from disk once
    per process: a random sample otherwise decompresses a whole 16-image group for one image (the tune
    stream's batch read, with 8 groups cached and now: benchmarks/input_pipeline.py). File handles are
    reopened in each process (DataLoader workers fork after construction, and each keeps its own cache).
    """

    def __init__(self, folder: Path, column: str, cache_bytes: int | None = None) -> None:
        self.files, self.column = [str(p) for p in part_files(folder)], column
        self.cache_bytes = LAZY_CACHE_BYTES if cache_bytes is None else cache_bytes  # read now: benchmarks vary it
        starts, self.groups, offset = [], [], 0
        for f, path in enumerate(self.files):
            meta = pq.ParquetFile(path).metadata
            for g in range(meta.num_row_groups):
                starts.append(offset)
                self.groups.append((f, g))
                offset += meta.row_group(g).num_rows
        self.starts, self.rows = np.array(starts, dtype=np.int64), offset
        self._pid, self._handles, self._cache, self.cached_bytes = None, {}, OrderedDict(), 0
        self.reads = 0  # row groups read from disk in this process

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, row: int) -> bytes | None:
        """The value of row `row` (None where null)."""
        if not 0 <= row < self.rows:
            raise IndexError(f"{self.column}: row {row} outside [0, {self.rows})")
        k = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self._group(k)[row - int(self.starts[k])].as_py()

    def _group(self, k: int) -> pa.Array:
        if self._pid != os.getpid():
            self._pid, self._handles, self._cache, self.cached_bytes, self.reads = os.getpid(), {}, OrderedDict(), 0, 0
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        f, g = self.groups[k]
        if f not in self._handles:
            self._handles[f] = pq.ParquetFile(self.files[f])
        group = self._handles[f].read_row_group(g, columns=[self.column]).column(0).combine_chunks()
        self.reads += 1
        self._cache[k], self.cached_bytes = group, self.cached_bytes + group.nbytes
        while self.cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self.cached_bytes -= dropped.nbytes
        return group

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pid": None, "_handles": {}, "_cache": OrderedDict(), "cached_bytes": 0, "reads": 0}


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (lossless)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> (H, W, 3) uint8 RGB array (fully decoded, so truncated data raises)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.array(im.convert("RGB"))


def decode_images(blobs: Iterable[bytes]) -> np.ndarray:
    """Same-size images -> (B, H, W, 3) uint8."""
    return np.stack([decode_image(b) for b in blobs])

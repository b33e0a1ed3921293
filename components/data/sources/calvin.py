"""CALVIN dataset folder reader (CALVIN's released layout): frames, language windows, episodes, scene split.

    <root>/{training,validation}/episode_XXXXXXX.npz     one 30 Hz frame each (the id is global)
    <root>/<split>/ep_start_end_ids.npy                 (n, 2) inclusive [start, end] frame ids per episode
    <root>/<split>/lang_annotations/auto_lang_ann.npy    pickled dict: language.ann/.task, info.indx windows
    <root>/<split>/scene_info.npy                        pickled dict scene name -> inclusive frame range

Every frame listed by `ep_start_end_ids.npy` is read and checked against CALVIN's frame format (keys below,
optional keys checked when present). Depth and tactile arrays are validated but not stored: training
never reads them. A language window is kept when it lies inside one episode and all its frames were
kept; `info.indx` ends are inclusive, as CALVIN's own loaders read them (`range(start, end + 1)`).
Every file is read only from inside the dataset folder (`sources.check_path`): a frame npz that leads out
of it is quarantined (`outside_dataset`), an index file that does stops the ingest. Index files are all
read while planning, before anything is written; a folder without any frame is an error, not 0 rows.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.data.quarantine import BadRecord, IngestError, QuarantineRecord
from components.data.sources import (
    UnitResult,
    check_array,
    check_gripper,
    check_path,
    check_text,
    load_pickled,
    read_file,
)
from components.data.tables import FRAMES, FRAMES_SCHEMA, WINDOWS, PartWriter, encode_png

SPLITS = ("training", "validation")
# key -> (shape, kind); stored in the frames table
REQUIRED = {"rgb_static": ((200, 200, 3), "uint8"), "rgb_gripper": ((84, 84, 3), "uint8"),
            "actions": ((7,), "float"), "rel_actions": ((7,), "float"),
            "robot_obs": ((15,), "float"), "scene_obs": ((24,), "float")}
# validated when present, never stored (tactile needs `tacto`, which most recordings lack)
OPTIONAL = {"depth_static": ((200, 200), "float"), "depth_gripper": ((84, 84), "float"),
            "rgb_tactile": ((160, 120, 6), "uint8"), "depth_tactile": ((160, 120, 2), "float")}

# (scene_obs (24,), scene letter "A".."D", robot_obs (15,)) -> description; envs.describe.describe_scene
Describe = Callable[[np.ndarray, str, np.ndarray], str]


def frame_path(split_dir: Path, frame_id: int) -> Path:
    """CALVIN's per-frame file name."""
    return split_dir / f"episode_{frame_id:07d}.npz"


def read_frame(path: Path, root: Path | None = None) -> dict[str, Any]:
    """Load one frame npz and validate it; returns the checked arrays (floats as float32).

    The file must lie (symlinks resolved) inside the dataset folder `root` (default: its split folder).

    Raises:
        BadRecord: missing_file, corrupt_file, outside_dataset, bad_path, or a failed key check.
    """
    listed = "listed in ep_start_end_ids.npy but does not exist"
    data = read_file(root or path.parent, path, path.name, "missing_file", listed)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as err:  # noqa: BLE001 - zipfile/zlib/numpy raise many types for a damaged or crafted npz
        raise BadRecord("corrupt_file", path.name, f"{type(err).__name__}: {err}") from err
    checked = {key: check_array(arrays, key, shape, kind) for key, (shape, kind) in REQUIRED.items()}
    for key, (shape, kind) in OPTIONAL.items():
        if key in arrays:
            check_array(arrays, key, shape, kind)
    check_gripper(checked["rel_actions"], "rel_actions")
    check_gripper(checked["actions"], "actions")
    return checked


def load_episodes(split_dir: Path, root: Path | None = None) -> np.ndarray:
    """(n, 2) int64 inclusive [start, end] frame ids, sorted and disjoint.

    Raises:
        IngestError: the file is unusable, or lies outside `root` (the dataset folder; default: the split's parent).
    """
    path = split_dir / "ep_start_end_ids.npy"
    try:
        check_path(root or split_dir.parent, path, path.name)
        episodes = np.load(path, allow_pickle=False)
    except BadRecord as err:
        raise IngestError(f"{path}: {err.reason} ({err.kind})") from err
    except Exception as err:  # noqa: BLE001 - numpy raises many types for a damaged .npy; the index is unusable
        raise IngestError(f"{path}: cannot read the episode index: {type(err).__name__}: {err}") from err
    if not isinstance(episodes, np.ndarray):  # np.load returns an NpzFile for a zip
        raise IngestError(f"{path}: expected a .npy array, got {type(episodes).__name__}")
    if episodes.ndim != 2 or episodes.shape[1] != 2 or not np.issubdtype(episodes.dtype, np.integer):
        raise IngestError(f"{path}: expected an integer (n, 2) array, got {episodes.dtype} {episodes.shape}")
    episodes = episodes.astype(np.int64)
    if (episodes[:, 1] < episodes[:, 0]).any() or (episodes[1:, 0] <= episodes[:-1, 1]).any():
        raise IngestError(f"{path}: episodes must be sorted, disjoint, with start <= end")
    return episodes


def load_index(path: Path, root: Path) -> Any:
    """The object in one of CALVIN's dataset-level pickled `.npy` files (a 0-d object array's item).

    Raises:
        IngestError: naming the file, when it is outside `root`, missing, corrupt, or refused as an unsafe
            pickle (nothing in it ran): it indexes the whole split, so no record can be quarantined instead.
    """
    try:
        return load_pickled(path, root).item()
    except BadRecord as err:
        raise IngestError(f"{path}: {err.reason} ({err.kind})") from err
    except (ValueError, AttributeError) as err:  # .item() of an array that is not 0-d or 1-element
        raise IngestError(f"{path}: expected a pickled object in a 0-d array: {err}") from err


def load_scenes(root: Path, split_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """(scene name, first, last) from `scene_info.npy`; empty when the split has none (CALVIN validation)."""
    path = split_dir / "scene_info.npy"
    if not path.exists() and not path.is_symlink():
        return ()
    info = load_index(path, root)
    try:
        return tuple((check_text(str(name), "scene"), int(lo), int(hi)) for name, (lo, hi) in info.items())
    except (AttributeError, TypeError, ValueError, OverflowError, BadRecord) as err:
        raise IngestError(f"{path}: expected a dict scene name -> [first, last] frame id: {err}") from err


@dataclass(frozen=True)
class CalvinUnit:
    """A run of consecutive frames of one split, read and written as one part file."""

    root: str
    split: str
    index: int
    # (episode, first frame id, first step, number of frames): consecutive frames of one episode
    segments: tuple[tuple[int, int, int, int], ...]
    scenes: tuple[tuple[str, int, int], ...]

    @property
    def frames(self) -> list[tuple[int, int, int]]:
        """(frame_id, episode, step) of every frame of the unit."""
        return [(first + i, e, step + i) for e, first, step, n in self.segments for i in range(n)]

    def scene_of(self, frame_id: int) -> str | None:
        """The scene whose range holds the frame."""
        return next((name for name, lo, hi in self.scenes if lo <= frame_id <= hi), None)

    def read(self, out_root: Path, rows_per_file: int, describe: Describe | None) -> UnitResult:
        """Validate the unit's frames and write the good ones to `frames/`."""
        result, split_dir = UnitResult(), Path(self.root) / self.split
        writer = PartWriter(out_root / FRAMES, f"calvin-{self.split}-u{self.index:05d}", FRAMES_SCHEMA, rows_per_file)
        for frame_id, episode, step in self.frames:
            path = frame_path(split_dir, frame_id)
            source = f"{self.split}/{path.name}"
            result.count(FRAMES)
            try:
                data = read_frame(path, Path(self.root))
            except BadRecord as err:
                result.records.append(QuarantineRecord.of(FRAMES, source, err))
                continue
            scene = self.scene_of(frame_id)
            text = describe(data["scene_obs"], scene[-1], data["robot_obs"]) if describe and scene else None
            writer.add({"dataset": "calvin", "split": self.split, "episode": episode, "step": step,
                        "frame_id": frame_id, "source": source, "scene": scene,
                        "rgb_static": encode_png(data["rgb_static"]), "rgb_gripper": encode_png(data["rgb_gripper"]),
                        "actions": data["rel_actions"], "abs_actions": data["actions"],
                        "robot_obs": data["robot_obs"], "scene_obs": data["scene_obs"], "description": text})
            result.kept_frames.append((self.split, frame_id))
        writer.flush()
        result.files = [str(p.relative_to(out_root)) for p in writer.files]
        return result


def plan_calvin(root: Path, frames_per_unit: int) -> tuple[list[CalvinUnit], list[LanguageIndex]]:
    """Split every present split of a CALVIN folder into read units, after reading all its index files.

    Returns:
        units, and each split's language windows (checked against the kept frames once the units ran).

    Raises:
        IngestError: no frames (no split folder, no episode_*.npz, or no episode listed), or an unusable
            index file (named).
    """
    splits = [s for s in SPLITS if (root / s).is_dir()]
    if not any(_has_frame_files(root / s) for s in splits):
        raise IngestError(f"{root}: no frames found (expected training/ and validation/ with episode_*.npz)")
    units, windows = [], []
    for split in splits:
        episodes = load_episodes(root / split, root)
        scenes = load_scenes(root, root / split)
        windows.append(load_language(root, split, episodes))
        for segments in _chunk_episodes(episodes, frames_per_unit):
            units.append(CalvinUnit(str(root), split, len(units), segments, scenes))
    if not units:
        raise IngestError(f"{root}: no frames found (ep_start_end_ids.npy of {', '.join(splits)} lists no episode)")
    return units, windows


def _has_frame_files(split_dir: Path) -> bool:
    """Whether the folder holds an `episode_*.npz` (stops at the first: real splits hold millions)."""
    with os.scandir(split_dir) as entries:
        return any(e.name.startswith("episode_") and e.name.endswith(".npz") for e in entries)


def _chunk_episodes(episodes: np.ndarray, size: int) -> list[tuple[tuple[int, int, int, int], ...]]:
    """Cut the frames of all episodes, in order, into runs of `size` frames (as per-episode segments)."""
    chunks, current, room = [], [], size
    for e, (lo, hi) in enumerate(episodes.tolist()):
        step = 0
        while step <= hi - lo:
            n = min(room, hi - lo + 1 - step)
            current.append((e, lo + step, step, n))
            step, room = step + n, room - n
            if room == 0:
                chunks.append(tuple(current))
                current, room = [], size
    if current:
        chunks.append(tuple(current))
    return chunks


@dataclass(frozen=True)
class LanguageIndex:
    """One split's language windows as `auto_lang_ann.npy` lists them (not yet checked against the frames)."""

    split: str
    # the annotation file, relative to the dataset root (the report's `file`)
    source: str
    episodes: np.ndarray
    texts: list[Any]
    tasks: list[Any]
    # (start, end) frame ids, inclusive
    indx: list[Any]

    def check(self, kept: set[int]) -> UnitResult:
        """The windows table rows of the split: windows inside one episode whose frames are all in `kept`."""
        result = UnitResult()
        for i, (text, task, window) in enumerate(zip(self.texts, self.tasks, self.indx, strict=True)):
            result.count(WINDOWS)
            try:
                row = window_row(self.split, i, text, task, window, self.episodes, kept)
                result.windows.append(row | {"source": self.source})
            except BadRecord as err:
                result.records.append(QuarantineRecord.of(WINDOWS, self.source, err))
        return result


def load_language(root: Path, split: str, episodes: np.ndarray) -> LanguageIndex:
    """Read a split's `lang_annotations/auto_lang_ann.npy`; IngestError (naming it) when it is unusable."""
    path = root / split / "lang_annotations" / "auto_lang_ann.npy"
    ann = load_index(path, root)
    try:
        texts, tasks, indx = (list(v) for v in (ann["language"]["ann"], ann["language"]["task"], ann["info"]["indx"]))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise IngestError(f"{path}: expected CALVIN's dict with language.ann, language.task and info.indx: "
                          f"{type(err).__name__}: {err}") from err
    if not len(texts) == len(tasks) == len(indx):
        raise IngestError(f"{path}: language.ann ({len(texts)}), language.task ({len(tasks)}) and info.indx "
                          f"({len(indx)}) must have the same length")
    return LanguageIndex(split, f"{split}/lang_annotations/{path.name}", episodes, texts, tasks, indx)


def window_row(split: str, i: int, text: Any, task: Any, window: Any, episodes: np.ndarray,
               kept: set[int]) -> dict[str, Any]:
    """Validate window `i` and return its table row (without `source`)."""
    try:
        start, end = (int(v) for v in window)
    except (TypeError, ValueError, OverflowError) as err:
        raise BadRecord("bad_value", f"info.indx[{i}]", f"{window!r:.80} is not a (start, end) pair") from err
    if not isinstance(text, str) or not text.strip():
        raise BadRecord("bad_value", f"language.ann[{i}]", f"{text!r:.80} is not a non-empty instruction")
    check_text(text, f"language.ann[{i}]")
    task = None if task is None else check_text(str(task), f"language.task[{i}]")
    e = int(np.searchsorted(episodes[:, 0], start, side="right")) - 1
    if start > end or e < 0 or end > episodes[e, 1]:
        raise BadRecord("outside_episode", f"info.indx[{i}]", f"window [{start}, {end}] is not inside one episode")
    missing = [f for f in range(start, end + 1) if f not in kept]
    if missing:
        raise BadRecord("bad_frame", f"info.indx[{i}]",
                        f"window [{start}, {end}] covers {len(missing)} quarantined frame(s), first {missing[0]}")
    lo = int(episodes[e, 0])
    return {"dataset": "calvin", "split": split, "episode": e, "start_step": start - lo, "end_step": end - lo,
            "instruction": text.strip(), "task": task}

"""Readers of the raw dataset formats the ingest stage accepts, and the checks they share.

* `calvin`: a CALVIN dataset folder (`training/`, `validation/`: per-frame npz, episode index,
  language annotations, scene split), real or written by the `collect` stage.
* `bridge`: a BridgeData v2 raw folder (`**/raw/traj_group*/traj*/`).
* `llava`: a LLaVA-665k folder (`llava_v1_5_mix665k.json` + image files).

Each reader splits its dataset into `ReadUnit`s (a few thousand records each) that run independently
(Ray tasks in the ingest stage), validates every record and raises `BadRecord` for the ones to
quarantine; a record's failures of the file system or of decoding (OSError, a NUL byte or undecodable
name, text Parquet cannot store) become `BadRecord`s too, never an error of the whole run. Every file a
reader opens goes through `check_path`: a path whose target (symlinks resolved) lies outside the dataset
folder is refused (`outside_dataset`), be it a record's file or an index file.

CALVIN's `auto_lang_ann.npy`/`scene_info.npy` and Bridge's `*.pkl` are Python pickles, which `pickle.load`
would let run code; `load_pickled` reads them with `components.data.safe_pickle`, which admits
only numpy arrays of plain dtypes and builtin containers and refuses anything else before it runs (a
Bridge trajectory is quarantined as `unsafe_pickle`; a CALVIN index file stops the ingest, naming it),
and only from inside the dataset folder the user named, never from a path a record points to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.data.quarantine import BadRecord, QuarantineRecord
from components.data.safe_pickle import UnsafePickleError, load_npy, load_pickle


@dataclass
class UnitResult:
    """What one read unit produced."""

    # part files written, relative to the output root
    files: list[str] = field(default_factory=list)
    # records seen per table (kept + quarantined)
    totals: dict[str, int] = field(default_factory=dict)
    records: list[QuarantineRecord] = field(default_factory=list)
    # rows for small tables that the driver writes (Bridge windows)
    windows: list[dict[str, Any]] = field(default_factory=list)
    # (split, frame_id) of every frame kept (CALVIN: windows are checked against it)
    kept_frames: list[tuple[str, int]] = field(default_factory=list)
    # records skipped on purpose, not bad, by reason: LLaVA samples without an image, Bridge trajectories
    # without lang.txt (BridgeData v2 labels only part of its trajectories; their frames are still kept)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        """Count one record skipped for `reason`."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def count(self, table: str, n: int = 1) -> None:
        """Add `n` records seen for `table`."""
        self.totals[table] = self.totals.get(table, 0) + n


def check_path(root: Path, path: Path, key: str) -> Path:
    """`path`, once it is a usable path whose target (symlinks resolved) lies inside the dataset folder `root`.

    Raises:
        BadRecord: bad_path (a NUL byte, a name the file system cannot encode, a symlink loop) or
            outside_dataset (the path, or a symlink on its way, leads out of `root`).
    """
    try:
        if "\x00" in str(path):
            raise ValueError("embedded NUL byte")
        os.fsencode(path)  # lone surrogates that are not undecodable bytes: UnicodeEncodeError
        real = path.resolve()
    except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: Path.resolve's symlink loop (Python 3.11)
        raise BadRecord("bad_path", key, f"{str(path)!r} is not a usable path: {type(err).__name__}: {err}") from err
    if not real.is_relative_to(root.resolve()):
        raise BadRecord("outside_dataset", key, f"{path} leads to {real}, outside the dataset folder {root}")
    return path


def read_file(root: Path, path: Path, key: str, missing: str = "missing_file",
              missing_reason: str = "does not exist") -> bytes:
    """The bytes of a file that lies inside the dataset folder `root`.

    Raises:
        BadRecord: bad_path, outside_dataset (see `check_path`), `missing` when there is no such file,
            corrupt_file when it cannot be read.
    """
    check_path(root, path, key)
    try:
        is_file = path.is_file()
    except OSError as err:  # e.g. ENAMETOOLONG, EACCES on a folder on the way
        raise BadRecord("bad_path", key, f"{path} cannot be looked up: {type(err).__name__}: {err}") from err
    if not is_file:
        raise BadRecord(missing, key, missing_reason)
    try:
        return path.read_bytes()
    except OSError as err:
        raise BadRecord("corrupt_file", key, f"cannot be read: {type(err).__name__}: {err}") from err


def check_text(value: Any, key: str, kind: str = "bad_value") -> str:
    """`value` when it is a string that UTF-8 can encode; BadRecord(`kind`) otherwise.

    Parquet's strings are UTF-8, but JSON and pickles allow lone surrogates and file names undecodable bytes.
    """
    if not isinstance(value, str):
        raise BadRecord(kind, key, f"{type(value).__name__} {value!r:.80}, expected a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadRecord(kind, key, f"{value!r:.200} is not valid UTF-8 text: {err.reason} at {err.start}") from err
    return value


def load_pickled(path: Path, root: Path) -> Any:
    """Load a pickled dataset file that lies inside the dataset folder `root`, without running code from it.

    `.npy` files go through `safe_pickle.load_npy` (an array, as `np.load(path, allow_pickle=True)` returns
    it: CALVIN's dicts are 0-d object arrays, use `.item()`), anything else through `safe_pickle.load_pickle`.
    Both admit only numpy arrays of plain dtypes and builtin containers.

    Raises:
        BadRecord: unsafe_pickle (the file names a global or call outside that allow-list; nothing in it ran),
            missing_file, corrupt_file, bad_path, or outside_dataset (not unpickled).
    """
    check_path(root, path, path.name)
    try:
        if not path.is_file():
            raise BadRecord("missing_file", path.name, "does not exist")
    except OSError as err:
        raise BadRecord("bad_path", path.name, f"{path} cannot be looked up: {type(err).__name__}: {err}") from err
    try:
        return load_npy(path) if path.suffix == ".npy" else load_pickle(path)
    except UnsafePickleError as err:
        raise BadRecord("unsafe_pickle", path.name, err.reason) from err
    except Exception as err:  # noqa: BLE001 - any other unpickling failure means the file is corrupt
        raise BadRecord("corrupt_file", path.name, f"cannot be unpickled: {type(err).__name__}: {err}") from err


def check_array(data: dict[str, Any], key: str, shape: tuple[int | None, ...], kind: str) -> np.ndarray:
    """Validate one array of a record; returns it (floats as float32).

    Args:
        data: the record's arrays.
        key: which one.
        shape: expected shape; None matches any length on that axis.
        kind: "uint8" (images) or "float" (any floating dtype; CALVIN's README says float32 and its
            renderer writes float64, so both are accepted and cast).

    Raises:
        BadRecord: missing_key, bad_dtype, bad_shape or non_finite.
    """
    if key not in data:
        raise BadRecord("missing_key", key, "not in the record")
    try:
        value = np.asarray(data[key])
    except (ValueError, TypeError) as err:  # ragged nested lists (a pickle's), objects numpy cannot convert
        raise BadRecord("bad_shape", key, f"not an array: {type(err).__name__}: {err}") from err
    if kind == "uint8" and value.dtype != np.uint8:
        raise BadRecord("bad_dtype", key, f"dtype {value.dtype}, expected uint8")
    if kind == "float" and not np.issubdtype(value.dtype, np.floating):
        raise BadRecord("bad_dtype", key, f"dtype {value.dtype}, expected a floating type")
    if len(value.shape) != len(shape) or any(e is not None and s != e for s, e in zip(value.shape, shape, strict=True)):
        expected = tuple("*" if e is None else e for e in shape)
        raise BadRecord("bad_shape", key, f"shape {value.shape}, expected {expected}")
    if kind == "float":
        with np.errstate(over="ignore"):
            value = value.astype(np.float32)  # checked after the cast: a finite float64 can overflow float32
        if not np.isfinite(value).all():
            raise BadRecord("non_finite", key, f"{int((~np.isfinite(value)).sum())} NaN/inf values (as float32)")
    return value


def check_gripper(value: np.ndarray, key: str) -> None:
    """CALVIN's gripper action is exactly -1 (close) or +1 (open)."""
    if value[-1] not in (-1.0, 1.0):
        raise BadRecord("bad_value", key, f"gripper (last entry) is {value[-1]}, expected -1 or 1")

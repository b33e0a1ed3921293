"""BridgeData v2 raw folder reader: trajectories of JPEG frames, robot state, actions and an instruction.

    <root>/**/<date>/raw/traj_group*/traj*/
        images0/im_<t>.jpg    the camera (t = 0 .. T-1); Bridge has one view, so `rgb_gripper` is null
        obs_dict.pkl          dict: full_state (T, d), state (T, 7), time_stamp (T,)   (pickle, safe_pickle)
        policy_out.pkl        list of T-1 (or T) dicts with `actions` (7,)               (pickle, safe_pickle)
        lang.txt              the instruction on the first line

One trajectory is one episode and one language window over all its frames. Frames keep their JPEG
bytes as found; a trajectory whose pickles are missing, inconsistent or unsafe (naming anything besides
numpy arrays and builtin containers: refused unrun, `unsafe_pickle`) is quarantined frame by frame.
The last frame has no action when policy_out holds T-1 entries (its `actions` is null). BridgeData v2
labels only part of its trajectories: one without `lang.txt` keeps its frames (the VQ tokenizer can use
them), gets no window, and is counted as skipped; an empty or unreadable `lang.txt` is quarantined.
Every file is read only from inside the dataset folder: a trajectory folder, pickle, image or `lang.txt`
that leads out of it (a symlink) is quarantined as `outside_dataset`, never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.data.quarantine import BadRecord, IngestError, QuarantineRecord
from components.data.sources import UnitResult, check_array, check_path, check_text, load_pickled, read_file
from components.data.tables import FRAMES, FRAMES_SCHEMA, WINDOWS, PartWriter, decode_image


def find_trajectories(root: Path) -> list[Path]:
    """Every `raw/traj_group*/traj*` folder under `root`, sorted (the episode ids follow this order)."""
    trajs = sorted(p for p in root.glob("**/raw/traj_group*/traj*") if p.is_dir())
    if not trajs:
        raise IngestError(f"{root}: no BridgeData raw trajectories (**/raw/traj_group*/traj*/)")
    return trajs


def image_count(root: Path, traj: Path) -> int:
    """Number of `images0/im_*.jpg` files (a trajectory's size before reading it); 0 for a folder outside `root`."""
    try:
        check_path(root, traj / "images0", "images0")
    except BadRecord:
        return 0
    return sum(1 for _ in (traj / "images0").glob("im_*.jpg"))


def read_trajectory(root: Path, traj: Path) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Check a trajectory's folder and pickles.

    Returns:
        state (T, 7) float32, and per frame its action (7,) float32 or None (no action recorded).

    Raises:
        BadRecord: for the whole trajectory.
    """
    check_path(root, traj, "trajectory")
    check_text(str(traj.relative_to(root)), "trajectory", "bad_path")  # the `source` column is UTF-8
    obs = load_pickled(traj / "obs_dict.pkl", root)
    if not isinstance(obs, dict):
        raise BadRecord("corrupt_file", "obs_dict.pkl", f"expected a dict, got {type(obs).__name__}")
    state = check_array(obs, "state", (None, 7), "float")
    steps = state.shape[0]
    check_array(obs, "full_state", (steps, None), "float")
    check_array(obs, "time_stamp", (steps,), "float")
    policy = load_pickled(traj / "policy_out.pkl", root)
    if not isinstance(policy, list) or len(policy) not in (steps - 1, steps):
        length = len(policy) if isinstance(policy, list) else type(policy).__name__
        raise BadRecord("bad_shape", "policy_out.pkl", f"expected a list of {steps - 1} dicts, got {length}")
    actions: list[np.ndarray | None] = [None] * steps
    for t, entry in enumerate(policy):
        if not isinstance(entry, dict):
            raise BadRecord("corrupt_file", f"policy_out.pkl[{t}]", f"expected a dict, got {type(entry).__name__}")
        actions[t] = check_array(entry, "actions", (7,), "float")
    return state, actions


def read_instruction(traj: Path, root: Path | None = None) -> str:
    """The first line of `lang.txt`, which must lie inside the dataset folder `root` (default: `traj`)."""
    data = read_file(root or traj, traj / "lang.txt", "lang.txt")
    try:
        first = data.decode("utf-8").splitlines()[:1]
    except UnicodeDecodeError as err:
        raise BadRecord("corrupt_file", "lang.txt", f"{type(err).__name__}: {err}") from err
    if not first or not first[0].strip():
        raise BadRecord("bad_value", "lang.txt", "the first line (the instruction) is empty")
    return first[0].strip()


def read_image(traj: Path, t: int, root: Path | None = None) -> bytes:
    """The JPEG bytes of frame t, after checking they decode to an RGB image; inside `root` (default: `traj`)."""
    key = f"images0/im_{t}.jpg"
    data = read_file(root or traj, traj / key, key, "missing_image")
    try:
        decode_image(data)
    except Exception as err:  # noqa: BLE001 - PIL raises many types for truncated/corrupt images
        raise BadRecord("corrupt_file", key, f"{type(err).__name__}: {err}") from err
    return data


@dataclass(frozen=True)
class BridgeUnit:
    """A few trajectories read and written as one part file."""

    root: str
    index: int
    # (episode id, trajectory folder)
    trajectories: tuple[tuple[int, str], ...]

    def read(self, out_root: Path, rows_per_file: int, describe: Any = None) -> UnitResult:
        """Validate the trajectories and write their good frames to `frames/`; windows go back in the result."""
        result, root = UnitResult(), Path(self.root)
        writer = PartWriter(out_root / FRAMES, f"bridge-training-u{self.index:05d}", FRAMES_SCHEMA, rows_per_file)
        for episode, folder in self.trajectories:
            self._read_one(root, Path(folder), episode, writer, result)
        writer.flush()
        result.files = [str(p.relative_to(out_root)) for p in writer.files]
        return result

    def _read_one(self, root: Path, traj: Path, episode: int, writer: PartWriter, result: UnitResult) -> None:
        source = str(traj.relative_to(root))
        try:
            state, actions = read_trajectory(root, traj)
        except BadRecord as err:
            n = max(1, image_count(root, traj))
            result.count(FRAMES, n)
            result.count(WINDOWS)
            result.records += [QuarantineRecord.of(FRAMES, source, err)] * n
            result.records.append(QuarantineRecord(WINDOWS, source, "trajectory", "bad_frame", str(err)))
            return
        kept = 0
        for t in range(len(state)):
            result.count(FRAMES)
            try:
                image = read_image(traj, t, root)
                if not np.isfinite(state[t]).all():
                    raise BadRecord("non_finite", f"obs_dict.pkl:state[{t}]", "NaN/inf values")
            except BadRecord as err:
                result.records.append(QuarantineRecord.of(FRAMES, source, err))
                continue
            kept += 1
            writer.add({"dataset": "bridge", "split": "training", "episode": episode, "step": t, "frame_id": t,
                        "source": source, "scene": None, "rgb_static": image, "rgb_gripper": None,
                        "actions": actions[t], "abs_actions": None, "robot_obs": state[t], "scene_obs": None,
                        "description": None})
        self._window(root, traj, source, episode, len(state), kept, result)

    @staticmethod
    def _window(root: Path, traj: Path, source: str, episode: int, steps: int, kept: int, result: UnitResult) -> None:
        if not (traj / "lang.txt").exists() and not (traj / "lang.txt").is_symlink():
            result.skip("bridge_without_lang")
            return
        result.count(WINDOWS)
        try:
            instruction = read_instruction(traj, root)
            if kept < steps:
                raise BadRecord("bad_frame", "trajectory", f"{steps - kept} of {steps} frames were quarantined")
        except BadRecord as err:
            result.records.append(QuarantineRecord.of(WINDOWS, source, err))
            return
        result.windows.append({"dataset": "bridge", "split": "training", "episode": episode, "start_step": 0,
                               "end_step": steps - 1, "instruction": instruction, "task": None, "source": source})


def plan_bridge(root: Path, frames_per_unit: int) -> list[BridgeUnit]:
    """Group the trajectories, in order, into units of about `frames_per_unit` frames."""
    units, current, size = [], [], 0
    for episode, traj in enumerate(find_trajectories(root)):
        current.append((episode, str(traj)))
        size += image_count(root, traj)
        if size >= frames_per_unit:
            units.append(BridgeUnit(str(root), len(units), tuple(current)))
            current, size = [], 0
    if current:
        units.append(BridgeUnit(str(root), len(units), tuple(current)))
    return units

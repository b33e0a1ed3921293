"""Training datasets: PRE/ACT samples from the pre-tokenized frames, MMU samples from the VQA table.

A robot sample is one frame t of a language window [start, end] (UP-VLA's DataProvider):
* `current_codes`: frame t's codes, views concatenated (static, gripper; Bridge has one camera, so its
  static codes stand in for the gripper view, as the reference duplicates the image);
* `future_codes`: the codes of frame min(t + delta_t, end), the future clamped to the window's end;
* `actions` (k, 7): actions t .. t+k-1; steps past the window's end (or without a recorded action) are
  padded as the reference does (zero pose, the last valid gripper repeated) and False in `action_mask`;
* `instruction`, and with the MMU-conditioned prompt the ground-truth `description` and the scene image;
* `robot_obs` (15,): the frame's CALVIN robot_obs, with `model.proprio` (read from the ingested frames table).
With `<stage>.task_repeats` a window's frames are listed that many times (a bigger epoch, the same data).
What a loss with weight 0 does not need is never loaded (no future codes, no actions, no scene images).

An MMU sample is one VQA row: the image (CLIP-normalised) and the conversation tokenised with labels on
the answers only (components/data/conversation.py). Both datasets hold codes, actions and texts in memory as
numpy / Arrow buffers (shared copy-on-write by DataLoader workers) and read images on demand
(`LazyBlobs`: one small Parquet row group per access), so image columns never have to fit in RAM.

    robot = RobotDataset(Path("data/tokens"), Path("data/ingested"), RobotSpec(...), sources=("calvin",))
    batch = RobotCollator(text_tokenizer, layout, cfg.model)([robot[i] for i in range(8)])   # RobotBatch
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset

from components.data.conversation import conversation_ids
from components.data.tables import FRAMES, VQA, WINDOWS, LazyBlobs, decode_image, read_table
from model.batches import clip_pixels
from model.config import ModelConfig
from model.proprio import ROBOT_OBS_DIM, proprio_features


@dataclass(frozen=True)
class RobotSpec:
    """What robot samples carry; a field off means that data is not even read."""

    num_views: int
    codes_per_view: int
    delta_t: int
    chunk_len: int
    with_future: bool
    with_actions: bool
    with_scene: bool
    with_proprio: bool = False

    @classmethod
    def of(cls, model: ModelConfig, *, lambda_pre: float, lambda_act: float, mmu_condition: bool) -> RobotSpec:
        """The spec of a training stage.

        Future codes iff λ_PRE > 0, actions iff λ_ACT > 0, robot_obs iff actions are trained and the model
        reads proprioception (`model.proprio`).
        """
        return cls(model.num_views, model.vq.tokens_per_image, model.delta_t, model.chunk_len,
                   lambda_pre > 0, lambda_act > 0, mmu_condition, model.proprio and lambda_act > 0)


def frame_keys(table: pa.Table, datasets: Sequence[str], step: str = "step") -> np.ndarray:
    """(n,) int64 sortable keys of (dataset, episode, `step` column), dataset by its position in `datasets`.

    Steps and episodes below 2**24 (16.7 M) fit; CALVIN's longest play sessions are far shorter.
    """
    index = pc.index_in(table.column("dataset"), pa.array(list(datasets)))
    if index.null_count:
        other = sorted(set(table.column("dataset").filter(pc.is_null(index)).to_pylist()))
        raise ValueError(f"frame_keys: rows of datasets {other} not among {list(datasets)}")
    code = index.to_numpy(zero_copy_only=False)
    episode = table.column("episode").to_numpy().astype(np.int64)
    return (code.astype(np.int64) << 48) | (episode << 24) | table.column(step).to_numpy().astype(np.int64)


def list_matrix(column: pa.ChunkedArray, width: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list column -> ((n, width) values with zeros at nulls, (n,) valid mask); lengths are checked."""
    column = column.combine_chunks()
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)[valid]
    if (lengths != width).any():
        raise ValueError(f"{name}: expected lists of {width} values, found lengths {sorted(set(lengths.tolist()))}")
    out = np.zeros((len(column), width), dtype=column.type.value_type.to_pandas_dtype())
    out[valid] = pc.list_flatten(column.filter(column.is_valid())).to_numpy().reshape(-1, width)
    return out, valid


class RobotDataset(Dataset):
    """PRE/ACT samples of some robot sources and one split (see the module docstring)."""

    def __init__(self, tokens_dir: Path, ingested_dir: Path, spec: RobotSpec, *, sources: Sequence[str],
                 split: str = "training", task_repeats: Mapping[str, int] | None = None) -> None:
        self.spec, self.sources = spec, tuple(sources)
        where = (pc.field("split") == split) & pc.field("dataset").isin(list(self.sources))
        frames = read_table(tokens_dir / FRAMES, columns=self._columns(), filters=where)
        frames = frames.take(np.argsort(frame_keys(frames, self.sources), kind="stable"))
        self.keys = frame_keys(frames, self.sources)
        if len(np.unique(self.keys)) != len(self.keys):
            raise ValueError(f"{tokens_dir / FRAMES}: a frame appears twice")
        self._load_frames(frames, tokens_dir / FRAMES)
        if self.spec.with_proprio:
            self._load_robot_obs(ingested_dir / FRAMES, where)
        windows = read_table(ingested_dir / WINDOWS, filters=where)
        if windows.num_rows == 0:
            raise ValueError(f"{ingested_dir / WINDOWS}: no language windows of {self.sources} in split {split!r}")
        self.instructions = windows.column("instruction").to_pylist()
        self.tasks = windows.column("task").to_pylist()
        self.window_rows = self._window_rows(windows, str(tokens_dir / FRAMES))
        self._index_samples()
        self._repeat_tasks(dict(task_repeats or {}))

    def _columns(self) -> list[str]:
        cols = ["dataset", "split", "episode", "step", "static_codes"]
        cols += ["gripper_codes"] if self.spec.num_views == 2 else []
        cols += ["actions"] if self.spec.with_actions else []
        return cols + (["description", "position"] if self.spec.with_scene else [])

    def _load_frames(self, frames: pa.Table, folder: Path) -> None:
        n = self.spec.codes_per_view
        codes, _ = list_matrix(frames.column("static_codes"), n, "static_codes")
        if self.spec.num_views == 2:
            gripper, has = list_matrix(frames.column("gripper_codes"), n, "gripper_codes")
            gripper[~has] = codes[~has]  # one-camera data (Bridge): the static view stands in, as in the reference
            codes = np.concatenate([codes, gripper], axis=1)
        self.codes = codes
        if self.spec.with_actions:
            self.actions, self.has_action = list_matrix(frames.column("actions"), 7, "actions")
        if self.spec.with_scene:
            self.descriptions = frames.column("description").combine_chunks()
            self.positions = frames.column("position").to_numpy()
            self.scene_images = LazyBlobs(folder, "scene_image")

    def _load_robot_obs(self, folder: Path, where: pc.Expression) -> None:
        """(n, 15) robot_obs of the tokens table's frames, from the ingested frames table (same frames)."""
        table = read_table(folder, columns=["dataset", "split", "episode", "step", "robot_obs"], filters=where)
        keys = frame_keys(table, self.sources)
        order = np.argsort(keys, kind="stable")
        if not np.array_equal(keys[order], self.keys):
            raise ValueError(f"{folder}: its frames of {self.sources} differ from the tokens table's "
                             "(re-run the pretokenize stage)")
        column = table.column("robot_obs").take(order)
        if column.null_count:
            raise ValueError(f"{folder}: robot_obs is missing in {column.null_count} frames of {self.sources}; "
                             "model.proprio needs it in every frame")
        lengths = set(pc.list_value_length(column).to_numpy(zero_copy_only=False).tolist())
        if lengths != {ROBOT_OBS_DIM}:
            raise ValueError(f"{folder}: robot_obs of {self.sources} has {sorted(lengths)} values per frame; "
                             f"model.proprio reads CALVIN's {ROBOT_OBS_DIM} (Bridge's 7-D state is another layout)")
        self.robot_obs, _ = list_matrix(column, ROBOT_OBS_DIM, "robot_obs")

    def _window_rows(self, windows: pa.Table, where: str) -> np.ndarray:
        """(W, 2) first and last table row of every window; an error when frames are missing."""
        start, end = (frame_keys(windows, self.sources, step) for step in ("start_step", "end_step"))
        lo = np.searchsorted(self.keys, start)
        hi = lo + (end - start)
        ok = (lo < len(self.keys)) & (hi < len(self.keys))
        ok[ok] &= (self.keys[lo[ok]] == start[ok]) & (self.keys[hi[ok]] == end[ok])
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            raise ValueError(f"{where}: window {windows.slice(bad, 1).to_pylist()[0]} covers frames that are not "
                             "in the tokens table (re-run the pretokenize stage)")
        return np.stack([lo, hi], axis=1)

    def _index_samples(self) -> None:
        lengths = self.window_rows[:, 1] - self.window_rows[:, 0] + 1
        self.sample_window = np.repeat(np.arange(len(lengths)), lengths)
        offset_in_window = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        self.sample_row = self.window_rows[self.sample_window, 0] + offset_in_window
        if self.spec.with_actions:  # a frame without a recorded action (Bridge's last) cannot start a chunk
            keep = self.has_action[self.sample_row]
            self.sample_window, self.sample_row = self.sample_window[keep], self.sample_row[keep]
        if self.spec.with_scene:
            described = self.descriptions.is_valid().to_numpy(zero_copy_only=False)
            missing = np.unique(self.sample_row[~described[self.sample_row]])
            if len(missing):
                raise ValueError(f"mmu_condition needs a scene description for every frame, but {len(missing)} "
                                 f"frames of {self.sources} have none (ingest describes CALVIN frames whose scene "
                                 "is known from scene_info.npy, with envs' description function)")

    def _repeat_tasks(self, repeats: dict[str, int]) -> None:
        """Draw every sample of a window of task T `repeats[T]` times per epoch (`<stage>.task_repeats`).

        A task none of this dataset's windows has changes nothing (a small dataset may lack one); the training
        loop logs each source's epoch size, which shows whether a repeat took effect.
        """
        if not repeats:
            return
        times = np.array([repeats.get(task, 1) for task in self.tasks], dtype=np.int64)[self.sample_window]
        self.sample_window, self.sample_row = np.repeat(self.sample_window, times), np.repeat(self.sample_row, times)

    def __len__(self) -> int:
        return len(self.sample_row)

    def pose_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and mean square (float64) of the pose part of every action a sample can start from."""
        if not self.spec.with_actions:
            raise ValueError("RobotDataset.pose_moments: the dataset was built without actions")
        pose = self.actions[np.unique(self.sample_row), :-1].astype(np.float64)
        if len(pose) == 0:
            raise ValueError(f"RobotDataset.pose_moments: no samples with actions in {self.sources}")
        return pose.mean(axis=0), (pose**2).mean(axis=0)

    def proprio_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and mean square (float64) of the proprioception features of every sample's frame."""
        if not self.spec.with_proprio:
            raise ValueError("RobotDataset.proprio_moments: the dataset was built without robot_obs")
        rows = np.unique(self.sample_row)
        if len(rows) == 0:
            raise ValueError(f"RobotDataset.proprio_moments: no samples in {self.sources}")
        features = proprio_features(torch.from_numpy(self.robot_obs[rows])).double().numpy()
        return features.mean(axis=0), (features**2).mean(axis=0)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One sample: numpy arrays and strings (see the module docstring); `RobotCollator` batches them."""
        w, row = int(self.sample_window[i]), int(self.sample_row[i])
        last = int(self.window_rows[w, 1])
        sample: dict[str, Any] = {"instruction": self.instructions[w], "current_codes": self.codes[row]}
        if self.spec.with_future:
            sample["future_codes"] = self.codes[min(row + self.spec.delta_t, last)]
        if self.spec.with_actions:
            sample["actions"], sample["action_mask"] = self._chunk(row, last)
        if self.spec.with_scene:
            sample["description"] = self.descriptions[row].as_py()
            sample["scene_image"] = self.scene_images[int(self.positions[row])]
        if self.spec.with_proprio:
            sample["robot_obs"] = self.robot_obs[row]
        return sample

    def _chunk(self, row: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        rows = row + np.arange(self.spec.chunk_len)
        mask = rows <= last
        mask[mask] &= self.has_action[rows[mask]]
        chunk = np.zeros((self.spec.chunk_len, 7), dtype=np.float32)
        chunk[mask] = self.actions[rows[mask]]
        chunk[~mask, -1] = self.actions[rows[mask][-1], -1]  # row itself always has an action (see the index)
        return chunk, mask


class MMUDataset(Dataset):
    """Understanding samples from the VQA table (see the module docstring)."""

    def __init__(self, ingested_dir: Path, tokenizer: Any, *, eos_id: int, max_text_len: int, image_size: int) -> None:
        table = read_table(ingested_dir / VQA, columns=["id", "questions", "answers"])
        if table.num_rows == 0:
            raise ValueError(f"{ingested_dir / VQA}: no VQA samples")
        self.ids = table.column("id").combine_chunks()
        self.images = LazyBlobs(ingested_dir / VQA, "image")
        self.questions = table.column("questions").combine_chunks()
        self.answers = table.column("answers").combine_chunks()
        self.tokenizer, self.eos_id, self.max_text_len, self.image_size = tokenizer, eos_id, max_text_len, image_size

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """`pixel_values` (3, s, s), `input_ids` and `labels` (lists, labels -100 except answers + eos)."""
        image = torch.from_numpy(decode_image(self.images[i]))
        try:
            ids, labels = conversation_ids(self.tokenizer, self.questions[i].as_py(), self.answers[i].as_py(),
                                           self.eos_id, self.max_text_len)
        except ValueError as err:
            raise ValueError(f"VQA sample {self.ids[i].as_py()}: {err}") from err
        return {"pixel_values": clip_pixels(image[None], self.image_size)[0], "input_ids": ids, "labels": labels}


def mmu_text_budget(model: ModelConfig) -> int:
    """Longest MMU text: the positions left after <|mmu|> and the CLIP block (<|soi|> M tokens <|eoi|>)."""
    return model.max_position_embeddings - model.vision_tokens - 3

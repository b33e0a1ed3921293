"""Records one expert play episode as CALVIN frames and labels its language windows with the oracle.

A `PlaySession` (envs.experts.play) chains expert tasks; `record_episode` writes every frame as
CALVIN's `episode_XXXXXXX.npz` (numbered from 0 inside a scratch folder; `collect` renumbers them
globally), with `actions[t]` = the absolute TCP pose of frame t+1 and the gripper command taken at
t, and `rel_actions[t] = to_relative_action(actions[t], robot_obs[t])` as calvin_env's recorder
computes it. The language windows are found as CALVIN's annotator (`automatic_lang_annotator_mp.py`)
finds them: a `window`-frame span is labelled with a task when exactly that task fires between its
first and last frame but not yet by its 16th-last frame, so every window ends at most 15 frames after
the task's success and holds its approach, not what the robot does next (the retreat, the next task's
approach). When another task fired in the span's first frames, the window starts 16-31 frames later
(CALVIN's `prior_steps`). Candidate ends lie every `stride` frames; spans are cut at the episode's
first frame (CALVIN's play is one long stream; these episodes start at the evaluation pose, so a
short first task still gets windows, at least `window - 31` frames long: CALVIN's shortest). The
sentence is drawn from the task's training sentences (calvin-data/new_playtable.yaml), never from the
evaluation ones.

Example:
    result = record_episode(EpisodeJob("A", "training", seed=7, num_tasks=8, window=64, stride=3,
                                       depth=False), Path("scratch/ep0"))
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.annotations import load_training_sentences
from envs.experts.play import ARTICULATED, PlaySession
from envs.playtable import PlayTableEnv
from envs.tasks import TaskOracle

POS_SCALE, ORN_SCALE = 0.02, 0.05  # m and rad per unit of relative action (calvin_env's to_relative_action)
# a fixed time stamp for every zip member, so the same frame gives the same npz bytes
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def to_relative_action(actions: np.ndarray, robot_obs: np.ndarray) -> np.ndarray:
    """calvin_env's `to_relative_action`: absolute next pose (7,) and robot_obs (15,) -> (7,) in [-1, 1].

    Position: clip(delta, +-0.02 m) / 0.02; orientation: clip(wrap_to_pi(delta euler), +-0.05 rad) / 0.05;
    gripper copied, 0 rewritten to -1.
    """
    position = np.clip(actions[:3] - robot_obs[:3], -POS_SCALE, POS_SCALE) / POS_SCALE
    turn = (actions[3:6] - robot_obs[3:6] + np.pi) % (2 * np.pi) - np.pi
    orientation = np.clip(turn, -ORN_SCALE, ORN_SCALE) / ORN_SCALE
    gripper = -1.0 if actions[6] == 0 else float(actions[6])
    return np.concatenate([position, orientation, [gripper]])


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez_compressed` with fixed zip time stamps (byte-identical output for identical arrays)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


@dataclass(frozen=True)
class EpisodeJob:
    """One play episode to record."""

    scene: str
    split: str
    seed: int
    num_tasks: int
    # annotator window length and the spacing of window ends, frames
    window: int
    stride: int
    # write depth_static / depth_gripper (float32, metric)
    depth: bool
    # relative chance of an articulated task among the valid ones
    articulated_weight: float = 1.0


@dataclass
class EpisodeResult:
    """What an episode produced: its frame count, labelled windows (local frame ids) and statistics."""

    job: EpisodeJob
    frames: int = 0
    # (start, end inclusive, task, sentence)
    windows: list[tuple[int, int, str, str]] = field(default_factory=list)
    attempted: dict[str, int] = field(default_factory=dict)
    succeeded: dict[str, int] = field(default_factory=dict)
    # per key (robot_obs, scene_obs, actions, rel_actions): [count, sum, sum of squares, min, max]
    stats: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def add_stats(self, key: str, value: np.ndarray) -> None:
        """Accumulate a (d,) vector into the running statistics of `key`."""
        if key not in self.stats:
            self.stats[key] = [np.zeros(1), np.zeros_like(value), np.zeros_like(value), value.copy(), value.copy()]
        s = self.stats[key]
        s[0] += 1
        s[1] += value
        s[2] += value * value
        np.minimum(s[3], value, out=s[3])
        np.maximum(s[4], value, out=s[4])


class FrameWriter:
    """The `on_step` callback of a play session: writes frame t once the action taken at t is known."""

    def __init__(self, out_dir: Path, depth: bool, result: EpisodeResult, infos: list[dict],
                 env: PlayTableEnv) -> None:
        """Frames go to `out_dir`; `infos` collects `env.get_info()` of every frame (the annotator's input)."""
        self.out_dir, self.depth, self.result = out_dir, depth, result
        self.infos, self.env = infos, env
        self.pending: dict | None = None

    def __call__(self, obs: dict, action: np.ndarray | None) -> None:
        """Write the pending frame with this action (its effect is `obs`), then hold `obs` as pending."""
        if self.pending is not None:
            self._write(self.pending, obs, action)
        self.infos.append(self.env.get_info())
        self.pending = obs

    def finish(self) -> None:
        """Write the last frame: one more still step gives the pose `actions` refers to."""
        hold = np.concatenate([np.zeros(6), [float(self.env.robot.gripper_action)]])
        obs, _, _, _ = self.env.step(hold)
        self._write(self.pending, obs, hold)
        self.pending = None

    def _write(self, obs: dict, next_obs: dict, action: np.ndarray) -> None:
        actions = np.concatenate([next_obs["robot_obs"][:6], [action[6]]])
        frame = {"rgb_static": obs["rgb_obs"]["rgb_static"], "rgb_gripper": obs["rgb_obs"]["rgb_gripper"]}
        if self.depth:
            frame |= {"depth_static": obs["depth_obs"]["depth_static"],
                      "depth_gripper": obs["depth_obs"]["depth_gripper"]}
        frame |= {"actions": actions, "rel_actions": to_relative_action(actions, obs["robot_obs"]),
                  "robot_obs": obs["robot_obs"], "scene_obs": obs["scene_obs"]}
        for key in ("actions", "rel_actions", "robot_obs", "scene_obs"):
            self.result.add_stats(key, frame[key])
        save_npz(self.out_dir / f"episode_{self.result.frames:07d}.npz", frame)
        self.result.frames += 1


# CALVIN's annotator: the task must not have fired by this many frames before the window's end, and a
# window whose first frames hold another task starts PRIOR_STEPS later (drawn per window).
END_MARGIN = 15
PRIOR_STEPS = (16, 32)


def label_windows(infos: list[dict], window: int, stride: int, rng: np.random.Generator,
                  oracle: TaskOracle) -> list[tuple[int, int, str, str]]:
    """CALVIN's annotator over one episode (module docstring): (start, end inclusive, task, sentence) windows.

    `infos[t]` is the oracle's info of frame t, for every frame of the episode.
    """
    sentences = load_training_sentences()
    shortest = window - PRIOR_STEPS[1] + 1
    labelled = []
    for end in range(shortest - 1, len(infos), stride):
        first = max(0, end - window + 1)
        for start in (first, first + int(rng.integers(*PRIOR_STEPS))):
            if end - start + 1 < shortest:
                break
            tasks = oracle.get_task_info(infos[start], infos[end])
            if len(tasks) == 1 and not oracle.get_task_info_for_set(infos[start], infos[end - END_MARGIN], tasks):
                task = next(iter(tasks))
                labelled.append((start, end, task, sentences[task][rng.integers(len(sentences[task]))]))
                break
    return labelled


def record_episode(job: EpisodeJob, out_dir: Path) -> EpisodeResult:
    """Play and record one episode into `out_dir` (frames numbered from 0); deterministic for `job`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(job.seed)
    result, infos, oracle = EpisodeResult(job), [], TaskOracle()
    with PlayTableEnv(job.scene, cameras=True, seed=job.seed) as env:
        writer = FrameWriter(out_dir, job.depth, result, infos, env)
        weights = dict.fromkeys(ARTICULATED, job.articulated_weight)
        attempts = PlaySession(env, rng, oracle, weights).run(job.num_tasks, writer)
        writer.finish()
    for a in attempts:
        result.attempted[a.task] = result.attempted.get(a.task, 0) + 1
        result.succeeded[a.task] = result.succeeded.get(a.task, 0) + int(a.success)
    result.windows = label_windows(infos, job.window, job.stride, rng, oracle)
    return result

"""Assembles recorded episodes into one CALVIN split folder, in the layout of CALVIN's released datasets.

    <split>/episode_XXXXXXX.npz               frames, renumbered with global ids in episode order
    <split>/ep_start_end_ids.npy, ep_lens.npy  int64 (n, 2) inclusive [start, end] and (n,)
    <split>/scene_info.npy                     pickled dict calvin_scene_<S> -> [first, last] (both splits)
    <split>/statistics.yaml                    NormalizeVector mean/std of robot_obs and scene_obs, action bounds
    <split>/.hydra/merged_config.yaml          the env as recorded (scenes, cameras, control rate, recorder)
    <split>/lang_annotations/auto_lang_ann.npy language.ann/.task/.emb, info.indx (inclusive ends), info.episodes
    validation/lang_annotations/embeddings.npy task -> {emb (1, 1, 384), ann [evaluation sentence]}

`language.emb` is NOT paraphrase-MiniLM-L6-v2 (no sentence-transformers model is available offline):
it is `hashed_embedding`, a deterministic signed bag-of-words hash of dimension 384, L2-normalised,
so the file has CALVIN's shape and dtype; nothing in this project trains on it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from components.collection.calvin_recorder import EpisodeResult
from envs.tasks import load_eval_instructions

EMBEDDING_DIM = 384
NORMALIZE = "calvin_agent.utils.transforms.NormalizeVector"


def hashed_embedding(sentence: str) -> np.ndarray:
    """(384,) float32: each lower-case word adds +-1 at a position given by its BLAKE2b hash; unit norm."""
    vector = np.zeros(EMBEDDING_DIM, dtype=np.float32)
    for word in re.findall(r"[a-z0-9]+", sentence.lower()):
        digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        vector[digest % EMBEDDING_DIM] += 1.0 if (digest >> 32) & 1 else -1.0
    norm = np.linalg.norm(vector)
    return vector / norm if norm else vector


def place_episodes(split_dir: Path, results: Sequence[EpisodeResult], scratch: Sequence[Path],
                   first_id: int) -> np.ndarray:
    """Move each episode's frames from its scratch folder into `split_dir` with global ids from `first_id`.

    Returns:
        (n, 2) int64 inclusive [start, end] frame ids.
    """
    split_dir.mkdir(parents=True, exist_ok=True)
    bounds, next_id = [], first_id
    for result, folder in zip(results, scratch, strict=True):
        for local in range(result.frames):
            (folder / f"episode_{local:07d}.npz").rename(split_dir / f"episode_{next_id + local:07d}.npz")
        bounds.append((next_id, next_id + result.frames - 1))
        next_id += result.frames
    return np.array(bounds, dtype=np.int64).reshape(-1, 2)


def write_index(split_dir: Path, bounds: np.ndarray, results: Sequence[EpisodeResult]) -> None:
    """ep_start_end_ids.npy, ep_lens.npy and scene_info.npy (episodes of one scene are consecutive)."""
    np.save(split_dir / "ep_start_end_ids.npy", bounds)
    np.save(split_dir / "ep_lens.npy", bounds[:, 1] - bounds[:, 0] + 1)
    scenes: dict[str, list[int]] = {}
    for (lo, hi), result in zip(bounds.tolist(), results, strict=True):
        name = f"calvin_scene_{result.job.scene}"
        scenes[name] = [scenes[name][0] if name in scenes else lo, hi]
    np.save(split_dir / "scene_info.npy", np.array(scenes, dtype=object), allow_pickle=True)


def write_annotations(split_dir: Path, bounds: np.ndarray, results: Sequence[EpisodeResult]) -> int:
    """lang_annotations/auto_lang_ann.npy (and embeddings.npy in validation); returns the window count."""
    ann, tasks, indx = [], [], []
    for (lo, _), result in zip(bounds.tolist(), results, strict=True):
        for start, end, task, sentence in result.windows:
            ann.append(sentence)
            tasks.append(task)
            indx.append((lo + start, lo + end))
    emb = np.stack([hashed_embedding(s) for s in ann])[:, None, :] if ann else np.zeros((0, 1, EMBEDDING_DIM))
    data = {"language": {"ann": ann, "task": tasks, "emb": emb.astype(np.float32)},
            "info": {"indx": indx, "episodes": []}}
    folder = split_dir / "lang_annotations"
    folder.mkdir(exist_ok=True)
    np.save(folder / "auto_lang_ann.npy", np.array(data, dtype=object), allow_pickle=True)
    if split_dir.name == "validation":
        evaluation = {task: {"emb": hashed_embedding(text)[None, None, :], "ann": [text]}
                      for task, text in load_eval_instructions().items()}
        np.save(folder / "embeddings.npy", np.array(evaluation, dtype=object), allow_pickle=True)
    return len(ann)


def write_statistics(split_dir: Path, results: Sequence[EpisodeResult]) -> None:
    """statistics.yaml in calvin_agent's format, from the running sums the recorders kept."""
    def merged(key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        parts = [r.stats[key] for r in results]
        count = sum(float(p[0][0]) for p in parts)
        mean = sum(p[1] for p in parts) / count
        std = np.sqrt(np.maximum(sum(p[2] for p in parts) / count - mean * mean, 0.0))
        return mean, std, np.min([p[3] for p in parts], axis=0), np.max([p[4] for p in parts], axis=0)

    stats: dict = {}
    for key in ("robot_obs", "scene_obs"):
        mean, std, _, _ = merged(key)
        stats[key] = [{"_target_": NORMALIZE, "mean": mean.round(6).tolist(), "std": std.round(6).tolist()}]
    _, _, low, high = merged("actions")
    stats["act_min_bound"], stats["act_max_bound"] = low.round(6).tolist(), high.round(6).tolist()
    (split_dir / "statistics.yaml").write_text(yaml.safe_dump(stats, sort_keys=False))


def write_merged_config(split_dir: Path, results: Sequence[EpisodeResult]) -> None:
    """.hydra/merged_config.yaml: what calvin_env's merged config records, for PlayTable."""
    job = results[0].job
    config = {"env": {"_target_": "envs.playtable.PlayTableEnv", "scenes": sorted({r.job.scene for r in results}),
                      "control_freq": 30, "physics_freq": 240, "use_egl": False, "renderer": "tiny"},
              "cameras": {"static": {"width": 200, "height": 200, "fov": 10},
                          "gripper": {"width": 84, "height": 84, "fov": 75}},
              "recorder": {"experts": "envs.experts", "tasks_per_episode": job.num_tasks,
                           "annotation_window": job.window, "window_stride": job.stride, "depth": job.depth,
                           "tactile": False, "language_embedding": f"hashed bag-of-words {EMBEDDING_DIM}-d"}}
    (split_dir / ".hydra").mkdir(exist_ok=True)
    (split_dir / ".hydra" / "merged_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def write_split(split_dir: Path, results: Sequence[EpisodeResult], scratch: Sequence[Path], first_id: int) -> int:
    """Every file of one split; returns the number of language windows."""
    bounds = place_episodes(split_dir, results, scratch, first_id)
    write_index(split_dir, bounds, results)
    write_statistics(split_dir, results)
    write_merged_config(split_dir, results)
    return write_annotations(split_dir, bounds, results)

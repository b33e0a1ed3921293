"""`collect` stage: scripted experts in PlayTable write CALVIN-, BridgeData v2- and LLaVA-format data.

    <out_dir>/calvin/{training,validation}/   play episodes of cfg.train_scenes / cfg.val_scenes (calvin_writer.py)
    <out_dir>/bridge/                          prediction-only videos in randomised settings (bridge_recorder.py)
    <out_dir>/llava/                           VQA on simulator state (llava_recorder.py)

These are the folders the ingest stage's readers parse (components/data/sources/), exactly as they parse
the real datasets. Every episode, video and image batch is one job with its own seed (derived from
`cfg.seed`, the job's kind and index), run in `cfg.num_workers` processes; the outputs are put in
place in job order afterwards, so the bytes do not depend on the worker count or on timing.

    summary = collect_datasets(cfg.collect, Path("data/raw"), log=run)
    python -m workflows.collect                 # the DVC stage
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from components.collection.bridge_recorder import BridgeJob, record_video
from components.collection.calvin_recorder import EpisodeJob, EpisodeResult, record_episode
from components.collection.calvin_writer import write_split
from components.collection.llava_recorder import LlavaJob, record_samples
from components.core.config import CollectConfig
from components.core.picture_labels import label_grid, slot_centres
from components.core.tracking import NULL_LOGGER, MetricLogger
from components.data.safe_pickle import load_npy
from envs.symbolic import TASK_ORDER

KINDS = {"calvin": 0, "bridge": 1, "llava": 2}
SCRATCH = ".scratch"  # per-episode frame folders, removed once the splits are written
IMAGES_PER_JOB = 25  # LLaVA images rendered by one job (one env build each)


@dataclass(frozen=True)
class CollectSummary:
    """Counts of one collect run (also `metrics/collect.json`)."""

    frames: dict[str, int]
    episodes: dict[str, int]
    # labelled language windows per split, and per task over both splits
    windows: dict[str, int]
    windows_per_task: dict[str, int]
    # expert attempts / oracle successes per task during play
    attempted: dict[str, int]
    succeeded: dict[str, int]
    bridge_videos: int
    bridge_frames: int
    llava_images: int

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics for MLflow and DVC."""
        out = {f"frames_{k}": v for k, v in self.frames.items()}
        out |= {f"episodes_{k}": v for k, v in self.episodes.items()}
        out |= {f"windows_{k}": v for k, v in self.windows.items()}
        out |= {f"windows_task_{k}": v for k, v in self.windows_per_task.items()}
        tries = sum(self.attempted.values())
        out |= {"play_success_rate": sum(self.succeeded.values()) / tries if tries else 0.0,
                "bridge_videos": self.bridge_videos, "bridge_frames": self.bridge_frames,
                "llava_images": self.llava_images}
        return {k: float(v) for k, v in out.items()}


def job_seed(seed: int, kind: str, index: int) -> int:
    """The seed of job `index` of `kind`: independent streams, stable under any worker count."""
    return int(np.random.SeedSequence([seed, KINDS[kind], index]).generate_state(1)[0])


def plan_jobs(cfg: CollectConfig, out_dir: Path) -> list[tuple[str, Any, Path]]:
    """Every job as (kind, job, output folder), CALVIN episodes first (the longest)."""
    jobs: list[tuple[str, Any, Path]] = []
    splits = [("training", s, cfg.episodes_per_scene) for s in cfg.train_scenes]
    splits += [("validation", s, cfg.val_episodes_per_scene) for s in cfg.val_scenes]
    for split, scene, count in splits:
        for _ in range(count):
            i = len(jobs)
            job = EpisodeJob(scene, split, job_seed(cfg.seed, "calvin", i), cfg.tasks_per_episode, cfg.window,
                             cfg.window_stride, cfg.depth, cfg.articulated_weight)
            jobs.append(("calvin", job, out_dir / "calvin" / SCRATCH / f"ep{i:05d}"))
    for k in range(cfg.bridge_videos):
        scene = cfg.train_scenes[k % len(cfg.train_scenes)]
        jobs.append(("bridge", BridgeJob(k, scene, job_seed(cfg.seed, "bridge", k), cfg.bridge_frame_stride),
                     out_dir / "bridge"))
    for n, first in enumerate(range(0, cfg.llava_images, IMAGES_PER_JOB)):
        scene = cfg.train_scenes[n % len(cfg.train_scenes)]
        count = min(IMAGES_PER_JOB, cfg.llava_images - first)
        jobs.append(("llava", LlavaJob(first, count, scene, job_seed(cfg.seed, "llava", n), cfg.llava_questions),
                     out_dir / "llava"))
    return jobs


def run_job(item: tuple[int, str, Any, Path]) -> tuple[int, Any]:
    """Run one job in a worker process; returns (its position, its result)."""
    position, kind, job, folder = item
    recorders = {"calvin": record_episode, "bridge": record_video, "llava": record_samples}
    return position, recorders[kind](job, folder)


def run_jobs(jobs: Sequence[tuple[str, Any, Path]], workers: int) -> list[Any]:
    """Results of all jobs in job order, computed by `workers` spawned processes, with a progress bar."""
    items = [(i, kind, job, folder) for i, (kind, job, folder) in enumerate(jobs)]
    results: list[Any] = [None] * len(items)
    # spawn: pybullet clients and the caller's MLflow/Ray threads must not be forked
    with multiprocessing.get_context("spawn").Pool(workers) as pool, \
            tqdm(total=len(items), desc="collect jobs", unit="job") as bar:
        for position, result in pool.imap_unordered(run_job, items):
            results[position] = result
            bar.update(1)
    return results


def collect_datasets(cfg: CollectConfig, out_dir: Path, *, log: MetricLogger = NULL_LOGGER) -> CollectSummary:
    """Collect all three datasets into `out_dir` (replacing calvin/, bridge/ and llava/ there).

    Args:
        cfg: the `collect:` section.
        out_dir: the raw-data folder (data/raw in the pipeline).
        log: where the counts and a sample-frame grid per scene go.
    """
    for name in ("calvin", "bridge", "llava"):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    (out_dir / "bridge").mkdir(parents=True)
    jobs = plan_jobs(cfg, out_dir)
    results = run_jobs(jobs, cfg.num_workers)
    calvin = [(r, folder) for (kind, _, folder), r in zip(jobs, results, strict=True) if kind == "calvin"]
    frames, episodes, windows, first_id = {}, {}, {}, 0
    for split in ("training", "validation"):
        part = [(r, f) for r, f in calvin if r.job.split == split]
        episode_results = [r for r, _ in part]
        windows[split] = write_split(out_dir / "calvin" / split, episode_results, [f for _, f in part], first_id)
        frames[split], episodes[split] = sum(r.frames for r in episode_results), len(part)
        first_id += frames[split]
    shutil.rmtree(out_dir / "calvin" / SCRATCH)
    samples = [s for (kind, _, _), r in zip(jobs, results, strict=True) if kind == "llava" for s in r]
    (out_dir / "llava").mkdir(exist_ok=True)
    (out_dir / "llava" / "llava_v1_5_mix665k.json").write_text(json.dumps(samples, indent=1))
    videos = [r for (kind, _, _), r in zip(jobs, results, strict=True) if kind == "bridge"]
    summary = _summary([r for r, _ in calvin], frames, episodes, windows, videos, len(samples))
    log.log_metrics({f"collect/{k}": v for k, v in summary.metrics().items()})
    log.log_image(sample_grid(out_dir / "calvin", cfg), "collect/sample_frames.png")
    return summary


def _summary(episodes: list[EpisodeResult], frames: dict, counts: dict, windows: dict,
             videos: list[tuple[str, int]], images: int) -> CollectSummary:
    def per_task(values: list[dict[str, int]]) -> dict[str, int]:
        return {t: sum(v.get(t, 0) for v in values) for t in TASK_ORDER}

    labelled = per_task([{t: sum(1 for w in r.windows if w[2] == t)} for r in episodes for t in TASK_ORDER])
    return CollectSummary(frames=frames, episodes=counts, windows=windows, windows_per_task=labelled,
                          attempted=per_task([r.attempted for r in episodes]),
                          succeeded=per_task([r.succeeded for r in episodes]),
                          bridge_videos=len(videos), bridge_frames=sum(n for _, n in videos), llava_images=images)


def sample_grid(calvin_dir: Path, cfg: CollectConfig, per_scene: int = 4) -> np.ndarray:
    """Evenly spaced static-camera frames, one row per scene (first to last frame), titled and labelled.

    Returns:
        (H, W, 3) uint8: `rows * S` by `per_scene * S` frames (S: the static camera's side) below a title and
        column titles, right of a "scene, split, frame ids" label per row.
    """
    rows, labels = [], []
    for split in ("training", "validation"):
        info = load_npy(calvin_dir / split / "scene_info.npy").item()
        for scene, (lo, hi) in sorted(info.items()):
            ids = np.linspace(lo, hi, per_scene).astype(int)
            frames = [np.load(calvin_dir / split / f"episode_{i:07d}.npz")["rgb_static"] for i in ids]
            rows.append(np.concatenate(frames, axis=1))
            labels.append(f"scene {scene.removeprefix('calvin_scene_')} ({split})\nframes {lo}-{hi}")
    grid = np.concatenate(rows, axis=0)
    side = grid.shape[0] // len(rows)
    heads = [f"frame {j + 1} of {per_scene}" for j in range(per_scene)]
    heads[-1], heads[0] = "last frame", "first frame"  # one frame per scene: its first
    title = f"collect: static-camera frames at {per_scene} evenly spaced points of each scene's recording"
    return label_grid(grid, title=title, columns=list(zip(slot_centres(grid.shape[1], per_scene), heads, strict=True)),
                      rows=[((i + 0.5) * side, label) for i, label in enumerate(labels)])

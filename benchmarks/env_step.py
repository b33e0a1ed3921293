"""PlayTable step cost on one CPU core: both cameras, state only, and reset, against a CALVIN-like baseline.

The baseline is the same simulator rendered the way CALVIN renders: the Panda's detailed visual
meshes and every static-camera frame drawn in full (real CALVIN measured ~65 ms per step with both cameras
on one core of this machine class). Ours: convex-hull robot visuals and the layered static camera (the desk
re-rendered only when it changes, robot and blocks every frame; identical images). The trajectory
is fixed (smooth relative actions from CALVIN's evaluation pose of chain 0, the gripper closing and
opening), so runs are comparable; the load average is printed because other processes on the
machine inflate the figures.

Run:
    .venv/bin/python benchmarks/env_step.py [--steps 300] [--resets 20] [--core 0] [--scene D]
    .venv/bin/python benchmarks/env_step.py --smoke     # seconds: 20 steps, 5 resets (tests/test_benchmarks.py)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from envs.playtable import PlayTableEnv
from envs.sequences import get_sequences, initial_condition_to_obs


def trajectory(steps: int) -> np.ndarray:
    """(steps, 7) relative actions: the commanded TCP sweeps the free space over the table.

    From CALVIN's evaluation pose (our TCP at (0.024, -0.232, 0.608) m) the target follows smooth
    sinusoids of +-0.2, +-0.1, +-0.075 m in x, y, z with a small wrist yaw, never touching the desk;
    the gripper closes and opens every 60 steps.
    """
    t = np.arange(steps + 1)[:, None] / 30.0
    start, amplitude, period = np.array([0.024, -0.232, 0.608]), np.array([0.2, 0.1, 0.075]), np.array([6.0, 4.0, 3.0])
    path = start + amplitude * np.sin(2 * np.pi * t / period)
    position = np.clip(np.diff(path, axis=0) / 0.02, -1, 1)
    yaw = 0.3 * np.cos(2 * np.pi * t[1:] / 5.0)
    gripper = np.where((np.arange(steps)[:, None] // 60) % 2 == 0, 1.0, -1.0)
    return np.concatenate([position, np.zeros((steps, 2)), yaw, gripper], axis=1)


def time_steps(env: PlayTableEnv, start: tuple[np.ndarray, np.ndarray], actions: np.ndarray) -> float:
    """Mean ms per `env.step` over `actions`, after a reset to `start`."""
    env.reset(*start)
    begin = time.perf_counter()
    for action in actions:
        env.step(action)
    return (time.perf_counter() - begin) / len(actions) * 1000


def time_resets(env: PlayTableEnv, starts: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean ms per reset to a chain's initial state."""
    begin = time.perf_counter()
    for start in starts:
        env.reset(*start)
    return (time.perf_counter() - begin) / len(starts) * 1000


# --smoke: the same measurements at sizes that take seconds; explicit flags still win
SMOKE = ["--steps", "20", "--resets", "5"]


def main() -> None:
    """Print ms/step for each setup and the speed-up over the CALVIN-like baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="control steps per measurement")
    parser.add_argument("--resets", type=int, default=20, help="resets per measurement (CALVIN's first N chains)")
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin this process to")
    parser.add_argument("--scene", default="D", choices=["A", "B", "C", "D"])
    parser.add_argument("--smoke", action="store_true", help=f"tiny sizes, seconds: {' '.join(SMOKE)}")
    args = parser.parse_args()
    if args.smoke:
        args = parser.parse_args([*SMOKE, *sys.argv[1:]])
    os.sched_setaffinity(0, {args.core})
    chains = get_sequences(1000)[: args.resets]
    starts = [initial_condition_to_obs(state) for state, _ in chains]
    actions = trajectory(args.steps)
    setups = {
        "baseline: detailed robot meshes, full renders": dict(low_poly=False, render_cache=False),
        "low-poly robot, full renders": dict(low_poly=True, render_cache=False),
        "ours: low-poly robot, layered static camera": dict(low_poly=True, render_cache=True),
        "ours, state only (cameras=False)": dict(cameras=False),
    }
    print(f"scene {args.scene}, {args.steps} steps, pinned to core {args.core}, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    figures = {}
    for label, kwargs in setups.items():
        with PlayTableEnv(args.scene, **kwargs) as env:
            time_steps(env, starts[0], actions[:20])  # warm-up: first renders, caches
            figures[label] = time_steps(env, starts[0], actions)
            reset_ms = time_resets(env, starts)
        print(f"{label:50s} {figures[label]:7.2f} ms/step   reset {reset_ms:6.2f} ms")
    baseline = figures["baseline: detailed robot meshes, full renders"]
    ours = figures["ours: low-poly robot, layered static camera"]
    print(f"speed-up of ours over the baseline, both cameras: {baseline / ours:.2f}x "
          f"({ours:.2f} vs {baseline:.2f} ms/step; real CALVIN ~65 ms/step)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

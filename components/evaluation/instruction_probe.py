"""Does a policy read its instruction? The same observation under each task's sentence, chunks compared.

For each task, at its first `starts` single-task trial starts (`envs.experts.evaluate.reach_trial_starts`, the
starts `task_trials` uses), the engine plans one action chunk per instruction for the same frames, and the probe
records how far each chunk is from the one under the task's own evaluation sentence (mean absolute difference
over the chunk's actions and 7 dimensions, averaged over the starts). The diagonal is 0. Two tasks that need
different motions from the same start (open / close the drawer, turn the light bulb on / off) should have a
clearly non-zero entry; a near-zero one means the policy cannot tell them apart by their words there, and
whichever of the pair it happens to do, the other fails every trial. Two tasks that share their motion (the LED's
on and off both press its button) may rightly be near zero.

    probe = probe_instructions(load_inference("artifacts/tune/model"), env, ARTICULATED, starts=2)
    print(probe.table())
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from components.evaluation.policy import InferenceEngine, PlanRequest
from envs.experts.evaluate import reach_trial_starts, trial_starts
from envs.tasks import TaskOracle, load_eval_instructions


@dataclass(frozen=True)
class InstructionProbe:
    """distance[i, j]: at task i's starts, mean |chunk under task j's sentence - chunk under task i's own|."""

    tasks: tuple[str, ...]
    distance: np.ndarray
    starts: tuple[int, ...]  # starts reached per task (fewer than asked when the experts' prefixes failed)

    def table(self) -> str:
        """A markdown table: rows are the trials' tasks, columns the instructions given."""
        head = "| trial's task \\ instruction | " + " | ".join(self.tasks) + " | starts |"
        rule = "|" + "---|" * (len(self.tasks) + 2)
        rows = [f"| {task} | " + " | ".join(f"{d:.3f}" for d in self.distance[i]) + f" | {self.starts[i]} |"
                for i, task in enumerate(self.tasks)]
        return "\n".join([head, rule, *rows])

    def to_dict(self) -> dict:
        """JSON-ready: {task: {instruction's task: distance}} and the starts per task."""
        rows = zip(self.tasks, self.distance, strict=True)
        return {"distance": {t: dict(zip(self.tasks, map(float, row), strict=True)) for t, row in rows},
                "starts": dict(zip(self.tasks, self.starts, strict=True))}


def chunk_distances(engine: InferenceEngine, obs: dict, goals: Sequence[str], own: int) -> np.ndarray:
    """(len(goals),) mean |chunk(goal) - chunk(goals[own])| for one observation, planned as one batch."""
    rgb, rows = obs.get("rgb_obs", {}), len(goals)
    if "rgb_static" not in rgb:
        raise ValueError("observation has no rgb_obs.rgb_static: the probe needs an env built with cameras")
    gripper = np.stack([rgb["rgb_gripper"]] * rows) if "rgb_gripper" in rgb else None
    state = np.stack([obs["robot_obs"]] * rows) if "robot_obs" in obs else None
    reply = engine.plan(PlanRequest(goals=list(goals), static=np.stack([rgb["rgb_static"]] * rows), gripper=gripper,
                                    descriptions=[None] * rows, previews=[False] * rows, robot_obs=state))
    chunks = np.asarray(reply.actions, dtype=np.float64)
    return np.abs(chunks - chunks[own]).mean(axis=(1, 2))


def probe_instructions(engine: InferenceEngine, env: object, tasks: Sequence[str], *, starts: int = 2,
                       oracle: TaskOracle | None = None) -> InstructionProbe:
    """Probe `engine` at the first `starts` trial starts of each task in `env` (a PlayTableEnv with cameras)."""
    if starts < 1:
        raise ValueError(f"starts: at least 1, got {starts}")
    sentences = load_eval_instructions()
    unknown = [t for t in tasks if t not in sentences]
    if unknown:
        raise ValueError(f"tasks: no CALVIN evaluation sentence for {unknown}")
    oracle, goals = oracle or TaskOracle(), [sentences[t] for t in tasks]
    distance, reached = np.zeros((len(tasks), len(tasks))), []
    for i, task in enumerate(tasks):
        rows = [chunk_distances(engine, env.get_obs(), goals, i)
                for _ in reach_trial_starts(env, oracle, task, starts, trial_starts(task, 2 * starts))]
        if not rows:
            raise RuntimeError(f"{task}: the experts reached none of its trial starts")
        distance[i] = np.mean(rows, axis=0)
        reached.append(len(rows))
    return InstructionProbe(tuple(tasks), distance, tuple(reached))

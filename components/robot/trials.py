"""Operator-in-the-loop real-robot trials: task suites x N trials, labelled by the operator, resumable.

    summary = run_robot_trials(cfg.robot, env, policy, out_dir, operator=Operator(), checkpoint="runs:/<id>")

For every (suite, task, trial) not yet in `out_dir/trials.jsonl`: `env.reset()` (the environment asks
before homing), the operator sets up the scene and confirms the start (`env.arm`), the policy runs
for the task's `max_steps` control steps, and the operator labels success. Each trial is appended to
the JSONL log and flushed to disk as it ends, so an interrupted run (Ctrl-C, the operator answering
"n") resumes at the next unfinished trial; a trial that was cut short is redone. A robot fault during a
trial (a reflex, an error state) ends that trial: the environment stops the robot, the trial is logged
with its `fault` and no success label (it is not a failure of the policy and counts in no success
rate), the session goes on with the next trial (whose reset the operator confirms again), and a rerun
redoes the faulted trial.
Frames, actions and robot states of every trial go to `out_dir/frames/` and, with the per-trial and
per-task success rates, to MLflow through `log`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from components.core.config import RobotConfig, RobotTaskConfig
from components.core.tracking import NULL_LOGGER, MetricLogger
from components.robot.operator import Operator
from envs.base import Observation, Policy
from envs.franka.env import OperatorAbort
from envs.franka.robot import RobotFaultError

RESULTS_FILE, SUMMARY_FILE = "trials.jsonl", "summary.json"
SAFETY_FLAGS = ("clipped_action", "clipped_workspace", "clipped_tilt", "clipped_step", "overrun")


class RobotEnv(Protocol):
    """What the trials need from a robot environment (envs.franka.env.FrankaEnv provides it)."""

    def reset(self) -> Observation: ...  # noqa: D102

    def arm(self, question: str) -> None: ...  # noqa: D102

    def get_obs(self) -> Observation: ...  # noqa: D102

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, dict[str, Any]]: ...  # noqa: D102

    def stop(self) -> None: ...  # noqa: D102


@dataclass(frozen=True)
class TrialRecord:
    """One finished or faulted trial, as written to `trials.jsonl`."""

    suite: str
    task: str
    trial: int
    instruction: str
    success: bool
    steps: int
    duration_s: float
    started_at: str
    checkpoint: str
    # steps on which a safety limit changed the action: clipped_action, clipped_workspace, clipped_tilt,
    # clipped_step, overrun
    safety: dict[str, int]
    # the trial's frames file relative to the results folder; null when frames are not saved
    frames: str | None
    # the robot fault that ended the trial early (then `success` is false and means nothing: the trial is
    # left out of every success rate and redone by a rerun); null when the trial ran to the operator's label
    fault: str | None = None

    @property
    def outcome(self) -> str:
        """"success", "failure" (both labelled by the operator) or "fault" (the robot stopped the trial)."""
        return "fault" if self.fault is not None else "success" if self.success else "failure"


@dataclass(frozen=True)
class RobotTrialsSummary:
    """Success over the trials done so far; `complete` when every planned trial is done.

    `trials` counts labelled trials only; `faults` the trials a robot fault ended (each redone by a rerun).
    """

    trials: int
    successes: int
    success_rate: float
    faults: int
    per_suite: dict[str, float]
    per_task: dict[str, float]
    planned: int
    complete: bool
    results_path: str


def run_robot_trials(cfg: RobotConfig, env: RobotEnv, policy: Policy, out_dir: Path, *, operator: Operator,
                     checkpoint: str, log: MetricLogger = NULL_LOGGER) -> RobotTrialsSummary:
    """Run every unfinished trial of every task in `cfg.suites`, then summarise all trials in `out_dir`.

    Args:
        cfg: suites, trials per task, frame saving.
        env: the robot (it asks the operator before every motion and stops on any error).
        policy: CALVIN's policy surface; `reset()` before each trial, `step(obs, instruction)` per control step.
        out_dir: results folder; a rerun with the same folder and checkpoint resumes.
        operator: asks to set up scenes and to label success.
        checkpoint: what is evaluated (a path or MLflow URI); a folder never mixes two checkpoints.
        log: MLflow run receiving per-trial success, frames, and the summary.

    Raises:
        ValueError: `out_dir` holds trials of another checkpoint, or a malformed results line.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / RESULTS_FILE
    records = read_results(results, checkpoint)
    done = {(r.suite, r.task, r.trial): r for r in records if r.fault is None}
    faults = [r for r in records if r.fault is not None]
    plan = list(planned_trials(cfg))
    todo = [key for key in plan if key not in done]
    operator.say(f"{len(plan) - len(todo)} of {len(plan)} trials already in {results}; {len(todo)} to run.")
    tasks = {(suite, task.name): task for suite, tasks in cfg.suites.items() for task in tasks}
    try:
        for suite, name, trial in todo:
            record = run_trial(cfg, env, policy, out_dir, operator, suite, tasks[suite, name], trial, checkpoint)
            append_result(results, record)
            if record.fault is None:
                done[suite, name, trial] = record
                log.log_metrics({"trial_success": float(record.success)}, step=len(done))
            else:
                faults.append(record)
            if record.frames:  # uploaded now, so an interrupted session keeps them
                frames = out_dir / record.frames
                for path in (frames, frames.with_suffix(".gif")):
                    log.log_artifact(path, str(Path(record.frames).parent))
    except _OperatorStopped:
        operator.say("Stopped by the operator; rerun the same command to resume.")
    summary = summarize(cfg, list(done.values()), faults, results)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(asdict(summary), indent=2))
    log_summary(log, summary, out_dir)
    return summary


def planned_trials(cfg: RobotConfig) -> Iterator[tuple[str, str, int]]:
    """(suite, task, trial index) of every planned trial, in running order."""
    for suite, tasks in cfg.suites.items():
        for task in tasks:
            for trial in range(cfg.trials_per_task):
                yield suite, task.name, trial


class _OperatorStopped(Exception):
    """The operator declined to start the next trial."""


def run_trial(cfg: RobotConfig, env: RobotEnv, policy: Policy, out_dir: Path, operator: Operator, suite: str,
              task: RobotTaskConfig, trial: int, checkpoint: str) -> TrialRecord:
    """Reset, let the operator set up the scene, run the policy for `task.max_steps` steps, ask for the label.

    A robot fault while the policy runs ends the trial without a label: the record carries the fault.
    """
    operator.say(f"\n[{suite}] {task.name}, trial {trial + 1} of {cfg.trials_per_task}: \"{task.instruction}\"")
    try:
        env.reset()
        operator.say(f"Set up the scene for \"{task.instruction}\".")
        env.arm(f"Scene ready for \"{task.instruction}\"? Start trial {trial + 1} ('n' stops the session)")
    except OperatorAbort as err:
        raise _OperatorStopped from err
    started, start_time = datetime.now(UTC).isoformat(timespec="seconds"), time.monotonic()
    policy.reset()
    obs = env.get_obs()
    episode = Episode(obs)
    fault = run_policy(env, policy, task, obs, episode)
    duration = time.monotonic() - start_time
    if fault is None:
        success = operator.confirm(f"Did the robot succeed at \"{task.instruction}\"?")
    else:
        success = False
        operator.say(f"Robot fault after {len(episode.actions)} steps: {fault}\nThe robot is stopped. The trial is "
                     "logged as a fault, not as a policy failure; rerun the same command to redo it. Any further "
                     "motion waits for your confirmation of the next reset.")
    tag = "" if fault is None else "-fault"  # a redo does not overwrite the frames that show the fault
    frames = episode.save(out_dir, suite, task.name, trial, tag) if cfg.save_frames and episode.actions else None
    return TrialRecord(suite=suite, task=task.name, trial=trial, instruction=task.instruction, success=success,
                       steps=len(episode.actions), duration_s=round(duration, 3), started_at=started,
                       checkpoint=checkpoint, safety=episode.safety, frames=frames, fault=fault)


def run_policy(env: RobotEnv, policy: Policy, task: RobotTaskConfig, obs: Observation, episode: Episode) -> str | None:
    """Step the policy from `obs` for `task.max_steps` control steps, then stop the robot.

    Returns:
        None, or the robot fault that ended the run early (the environment has stopped the robot and moves
        it again only after an operator-confirmed reset; it never recovers mid-trial).
    """
    try:
        for _ in range(task.max_steps):
            action = np.asarray(policy.step(obs, task.instruction), dtype=np.float64)
            obs, _, _, info = env.step(action)
            episode.add(action, obs, info)
        env.stop()
    except RobotFaultError as err:
        return str(err)
    return None


class Episode:
    """The frames, actions, targets and robot states of one trial."""

    def __init__(self, obs: Observation) -> None:
        """Start from the observation the first action is computed from."""
        self.static, self.gripper = [obs["rgb_obs"]["rgb_static"]], [obs["rgb_obs"]["rgb_gripper"]]
        self.robot_obs, self.actions, self.targets = [obs["robot_obs"]], [], []
        self.safety = dict.fromkeys(SAFETY_FLAGS, 0)

    def add(self, action: np.ndarray, obs: Observation, info: dict[str, Any]) -> None:
        """Record one step: the action (7,), the resulting observation, and the safety flags in `info`."""
        self.actions.append(action)
        self.targets.append(info["target"])
        self.static.append(obs["rgb_obs"]["rgb_static"])
        self.gripper.append(obs["rgb_obs"]["rgb_gripper"])
        self.robot_obs.append(obs["robot_obs"])
        for flag in SAFETY_FLAGS:
            self.safety[flag] += int(bool(info[flag]))

    def save(self, out_dir: Path, suite: str, task: str, trial: int, tag: str = "") -> str:
        """Write `frames/<suite>/<task>/trial_NNN<tag>.npz` (+ a GIF of the static view); return the npz path.

        npz keys: rgb_static (T+1, S, S, 3), rgb_gripper (T+1, G, G, 3), robot_obs (T+1, 15), actions (T, 7),
        targets (T, 7: commanded xyz, euler, gripper).
        """
        folder = out_dir / "frames" / suite / task
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"trial_{trial:03d}{tag}.npz"
        np.savez_compressed(path, rgb_static=np.stack(self.static), rgb_gripper=np.stack(self.gripper),
                            robot_obs=np.stack(self.robot_obs), actions=np.stack(self.actions),
                            targets=np.stack(self.targets))
        images = [Image.fromarray(frame) for frame in self.static]
        images[0].save(path.with_suffix(".gif"), save_all=True, append_images=images[1:], duration=100, loop=0)
        return str(path.relative_to(out_dir))


def read_results(path: Path, checkpoint: str) -> list[TrialRecord]:
    """The trials in a results log (none if it does not exist), all of `checkpoint`.

    Raises:
        ValueError: a line is not a trial record (naming file and line), or belongs to another checkpoint.
    """
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = TrialRecord(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{path}:{number}: not a trial record ({err}); fix or remove the line") from err
        if record.checkpoint != checkpoint:
            raise ValueError(f"{path}:{number}: holds trials of checkpoint {record.checkpoint!r}, not {checkpoint!r}; "
                             "evaluate another checkpoint into another folder")
        records.append(record)
    return records


def append_result(path: Path, record: TrialRecord) -> None:
    """Append one trial as a JSON line and force it to disk before the next trial starts."""
    with path.open("a") as out:
        out.write(json.dumps(asdict(record)) + "\n")
        out.flush()
        os.fsync(out.fileno())


def summarize(cfg: RobotConfig, records: list[TrialRecord], faults: list[TrialRecord],
              results: Path) -> RobotTrialsSummary:
    """Success rates overall, per suite and per `suite/task`, over the planned trials that are done (labelled).

    `faults` (records with a `fault`) are only counted: a fault says nothing about the policy.
    """
    planned = set(planned_trials(cfg))
    counted = [r for r in records if (r.suite, r.task, r.trial) in planned]  # tasks since removed are ignored

    def rate(group: list[TrialRecord]) -> float:
        return sum(r.success for r in group) / len(group)

    per_suite = {s: rate(g) for s in cfg.suites if (g := [r for r in counted if r.suite == s])}
    per_task = {f"{s}/{t.name}": rate(g) for s, tasks in cfg.suites.items() for t in tasks
                if (g := [r for r in counted if (r.suite, r.task) == (s, t.name)])}
    successes = sum(r.success for r in counted)
    return RobotTrialsSummary(trials=len(counted), successes=successes,
                              success_rate=successes / len(counted) if counted else 0.0,
                              faults=sum((r.suite, r.task, r.trial) in planned for r in faults), per_suite=per_suite,
                              per_task=per_task, planned=len(planned), complete=len(counted) == len(planned),
                              results_path=str(results))


def log_summary(log: MetricLogger, summary: RobotTrialsSummary, out_dir: Path) -> None:
    """MLflow metrics `trials`, `faults` and the success rates (`success[/<suite>[/<task>]]`) + the logs."""
    metrics = {"trials": float(summary.trials), "faults": float(summary.faults)}
    if summary.trials:
        metrics["success"] = summary.success_rate
        metrics.update({f"success/{suite}": value for suite, value in summary.per_suite.items()})
        metrics.update({f"success/{task}": value for task, value in summary.per_task.items()})
    log.log_metrics(metrics)
    for name in (RESULTS_FILE, SUMMARY_FILE):
        if (out_dir / name).exists():
            log.log_artifact(out_dir / name)

"""Operator-labelled robot trials (components/robot/trials.py) on franky-sim with recorded cameras.

The operator is a script answering the real prompts; the policy is a scripted CALVIN policy. Robot
faults come from the fault-injecting franky-sim (tests/fixtures/faulty_sim_robot.py).
Budget: about 25 s (16 short trials of real-time simulated motion, MLflow included).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from components.core.config import RobotTaskConfig, load_config
from components.core.tracking import make_client, start_run
from components.robot.operator import Operator
from components.robot.trials import RESULTS_FILE, read_results, run_robot_trials
from envs.franka.env import FrankaEnv
from tests.fixtures.realsense import require_realsense, write_camera_pair
from tests.fixtures.sim_robot import faulty_sim_command, running_sim, sim_franka_config

CHECKPOINT = "checkpoints/upvla-test"


class ScriptedPolicy:
    """Alternates +x / -x half-speed steps; remembers instructions and resets."""

    def __init__(self) -> None:
        self.resets, self.goals = 0, []

    def reset(self) -> None:
        self.resets += 1

    def step(self, obs, goal):
        assert obs["robot_obs"].shape == (15,) and obs["rgb_obs"]["rgb_static"].shape == (200, 200, 3)
        self.goals.append(goal)
        return np.array([0.5 if len(self.goals) % 2 else -0.5, 0, 0, 0, 0, 0, 1.0])


class FaultingPolicy(ScriptedPolicy):
    """A ScriptedPolicy that, at its `at_step`-th step, makes the faulty simulator's robot go into a reflex."""

    def __init__(self, reflex_file, at_step: int) -> None:
        super().__init__()
        self.reflex_file, self.at_step = reflex_file, at_step

    def step(self, obs, goal):
        action = super().step(obs, goal)
        if len(self.goals) == self.at_step:
            self.reflex_file.touch()
        return action


class ScriptedOperator:
    """Answers the real prompts: yes to every motion, the given success labels, 'n' to start trial `stop_at`.

    With `events` (the faulty simulator's event log) it also notes what had reached the robot at each prompt.
    """

    def __init__(self, labels, stop_at=None, events=None) -> None:
        self.labels, self.stop_at, self.starts, self.prompts = list(labels), stop_at, 0, []
        self.events, self.seen = events, []

    def answer(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if self.events is not None:
            self.seen.append(self.events.read_text())
        if "Start trial" in prompt:
            self.starts += 1
            return "n" if self.starts == self.stop_at else "y"
        if "succeed" in prompt:
            return "y" if self.labels.pop(0) else "n"
        return "y"


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    require_realsense()
    return write_camera_pair(tmp_path_factory.mktemp("cameras"), 200)


@pytest.fixture
def robot_cfg():
    tasks = {"seen": (RobotTaskConfig("pick_carrot", "pick up the carrot", 3),
                      RobotTaskConfig("open_drawer", "open the drawer", 2)),
             "unseen": (RobotTaskConfig("pick_pepper", "pick up the pepper", 2),)}
    return replace(load_config().robot, suites=tasks, trials_per_task=2)


def run_session(robot_cfg, host, recordings, out_dir, operator, policy, log=None):
    env_cfg = sim_franka_config(host, recordings)
    with FrankaEnv(env_cfg, confirm=Operator(operator.answer, lambda m: None).confirm) as env:
        kwargs = {"log": log} if log is not None else {}
        return run_robot_trials(robot_cfg, env, policy, out_dir, checkpoint=CHECKPOINT,
                                operator=Operator(operator.answer, lambda message: None), **kwargs)


@pytest.mark.robot
def test_trials_resume_where_the_operator_stopped_and_log_to_mlflow(
        robot_cfg, franky_sim_host, recordings, tmp_path, tracking_target):
    out = tmp_path / "robot"
    first, policy = ScriptedOperator([True, False, True], stop_at=4), ScriptedPolicy()
    summary = run_session(robot_cfg, franky_sim_host, recordings, out, first, policy)
    assert (summary.trials, summary.planned, summary.complete) == (3, 6, False)
    assert policy.resets == 3 and policy.goals == ["pick up the carrot"] * 6 + ["open the drawer"] * 2
    lines = (out / RESULTS_FILE).read_text().splitlines()
    assert [(r["task"], r["trial"], r["success"]) for r in map(json.loads, lines)] == [
        ("pick_carrot", 0, True), ("pick_carrot", 1, False), ("open_drawer", 0, True)]

    second, policy = ScriptedOperator([False, True, True]), ScriptedPolicy()
    with start_run(tracking_target, "upvla-robot", "robot-test") as run:
        summary = run_session(robot_cfg, franky_sim_host, recordings, out, second, policy, log=run)
    assert policy.resets == 3  # only the unfinished trials ran
    assert (summary.trials, summary.successes, summary.complete) == (6, 4, True)
    assert summary.per_task == {"seen/pick_carrot": 0.5, "seen/open_drawer": 0.5, "unseen/pick_pepper": 1.0}
    assert summary.per_suite == {"seen": 0.5, "unseen": 1.0}
    assert json.loads((out / "summary.json").read_text())["success_rate"] == pytest.approx(4 / 6)

    metrics = make_client(tracking_target).get_run(run.run_id).data.metrics
    assert metrics["success"] == pytest.approx(4 / 6) and metrics["success/seen/open_drawer"] == 0.5
    assert metrics["success/unseen"] == 1.0
    folder = "frames/unseen/pick_pepper"
    artifacts = {a.path for a in make_client(tracking_target).list_artifacts(run.run_id, folder)}
    assert {f"{folder}/trial_001.npz", f"{folder}/trial_001.gif"} <= artifacts

    record = read_results(out / RESULTS_FILE, CHECKPOINT)[-1]
    frames = np.load(out / record.frames)
    assert frames["rgb_static"].shape == (3, 200, 200, 3) and frames["rgb_gripper"].shape == (3, 84, 84, 3)
    assert frames["actions"].shape == frames["targets"].shape == (2, 7) and frames["robot_obs"].shape == (3, 15)
    np.testing.assert_allclose(frames["targets"][0, :3] - frames["robot_obs"][0, :3], [0.01, 0, 0], atol=0.002)
    assert record.safety == {"clipped_action": 0, "clipped_workspace": 0, "clipped_tilt": 0, "clipped_step": 0,
                             "overrun": 0}
    assert record.fault is None and record.outcome == "success"
    # every trial asked to home, to start, and for a label; nothing else
    assert sum("home pose" in p for p in second.prompts) == 3 and sum("succeed" in p for p in second.prompts) == 3


@pytest.mark.robot
def test_a_fault_mid_trial_ends_it_as_a_fault_and_nothing_moves_until_the_operator_confirms(
        robot_cfg, recordings, tmp_path):
    recovery, reflex, events = tmp_path / "recovery", tmp_path / "reflex", tmp_path / "events"
    recovery.write_text("succeed")
    cfg = replace(robot_cfg, suites={"seen": (RobotTaskConfig("pick_carrot", "pick up the carrot", 5),)})
    out, home = tmp_path / "robot", sim_franka_config("-", recordings).home_joints
    with running_sim(faulty_sim_command(recovery, home, reflex_file=reflex, event_log=events)) as host:
        operator, policy = ScriptedOperator([True], events=events), FaultingPolicy(reflex, at_step=3)
        summary = run_session(cfg, host, recordings, out, operator, policy)  # auto_recover: true, as shipped
        assert (summary.trials, summary.successes, summary.faults, summary.complete) == (1, 1, 1, False)
        faulted, labelled = read_results(out / RESULTS_FILE, CHECKPOINT)
        assert (faulted.trial, faulted.outcome, faulted.success, faulted.steps) == (0, "fault", False, 2)
        assert "mode Reflex" in faulted.fault and faulted.frames == "frames/seen/pick_carrot/trial_000-fault.npz"
        assert (labelled.trial, labelled.outcome, labelled.steps) == (1, "success", 5)
        # the fault ended the trial without a label; the next motion waited for the operator's yes to homing
        assert sum("succeed" in p for p in operator.prompts) == 1
        homing = [i for i, p in enumerate(operator.prompts) if "home pose" in p]
        assert len(homing) == 2 and "reflex" in operator.prompts[homing[1]]
        at_fault = operator.seen[homing[1]]
        assert at_fault.endswith("move\nreflex\n")  # nothing (no motion, no recovery) since the fault
        assert events.read_text()[len(at_fault):].split()[:2] == ["recover-ok", "move"]  # then recovered, homed

        rerun, policy = ScriptedOperator([False]), ScriptedPolicy()
        summary = run_session(cfg, host, recordings, out, rerun, policy)
    assert policy.resets == 1 and read_results(out / RESULTS_FILE, CHECKPOINT)[-1].trial == 0  # the faulted one
    assert (summary.trials, summary.successes, summary.faults, summary.complete) == (2, 1, 1, True)
    assert summary.success_rate == 0.5  # the fault counts in no success rate


def test_a_results_log_of_another_checkpoint_or_with_a_broken_line_is_refused(robot_cfg, tmp_path):
    log = tmp_path / RESULTS_FILE
    record = {"suite": "seen", "task": "pick_carrot", "trial": 0, "instruction": "pick up the carrot",
              "success": True, "steps": 3, "duration_s": 1.0, "started_at": "2026-11-24T09:00:00+00:00",
              "checkpoint": "checkpoints/other", "safety": {}, "frames": None}
    log.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"trials.jsonl:1: holds trials of checkpoint 'checkpoints/other'"):
        run_robot_trials(robot_cfg, None, None, tmp_path, operator=Operator(), checkpoint=CHECKPOINT)
    log.write_text(json.dumps({**record, "checkpoint": CHECKPOINT}) + "\n" + '{"suite": "seen", "ta\n')
    with pytest.raises(ValueError, match=r"trials.jsonl:2: not a trial record"):
        read_results(log, CHECKPOINT)

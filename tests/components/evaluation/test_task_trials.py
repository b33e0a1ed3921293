"""Single-task trials: the experts' starts, the oracle's verdict, and a real checkpoint on Ray tasks.

~20 s on 2 idle cores: state-only expert trials, a do-nothing policy over 2 short trials, and a tiny random
checkpoint (tests/fixtures/tiny_policy.py) through `evaluate_tasks` with rendering on the session's Ray.
"""

from __future__ import annotations

import numpy as np
import pytest

from components.evaluation.task_trials import ARTICULATED, evaluate_tasks, run_task_trials
from envs.experts.policy import ExpertPolicy
from envs.playtable import PlayTableEnv
from envs.symbolic import TASK_ORDER
from tests.fixtures.tiny_policy import write_tiny_checkpoint


class StandStill:
    """A policy that never moves the arm (gripper kept open)."""

    def reset(self) -> None:
        pass

    def step(self, obs: dict, goal: str) -> np.ndarray:
        return np.r_[np.zeros(6), 1.0]


@pytest.fixture(scope="module")
def env():
    with PlayTableEnv("D", cameras=False) as playtable:
        yield playtable


def test_the_articulated_tasks_are_calvins_eight():
    assert set(ARTICULATED) <= set(TASK_ORDER) and len(set(ARTICULATED)) == 8


@pytest.mark.parametrize("task", ["open_drawer", "stack_block"])  # stack_block needs an expert-played prefix
def test_the_expert_solves_its_trials_from_protocol_starts(env, task):
    trials = run_task_trials(env, ExpertPolicy(env), task, trials=3)
    assert (trials.task, trials.trials, trials.successes) == (task, 3, 3)
    assert trials.rate == 1.0 and all(0 < steps < 360 for steps in trials.steps)


def test_a_policy_that_does_nothing_fails_every_trial_after_ep_len_steps(env):
    trials = run_task_trials(env, StandStill(), "turn_on_led", trials=2, ep_len=25)
    assert (trials.successes, trials.trials, trials.steps, trials.rate) == (0, 2, (25, 25), 0.0)


def test_a_failed_trial_records_what_the_policy_did_instead(env):
    class PressesTheButton(ExpertPolicy):
        """The LED expert, whatever it is asked: a policy that confuses the lightbulb with the LED."""

        def step(self, obs, goal):
            return super().step(obs, "press the button to turn on the led light")

    trials = run_task_trials(env, PressesTheButton(env), "turn_on_lightbulb", trials=2, ep_len=120)
    assert trials.successes == 0 and len(trials.instead) == 2
    assert all(len(done) == 1 and done[0] in ("turn_on_led", "turn_off_led") for done in trials.instead)
    assert sum(trials.instead_counts.values()) == 2
    standing = run_task_trials(env, StandStill(), "turn_on_led", trials=1, ep_len=5)
    assert standing.instead == ((),) and standing.instead_counts == {}


def test_trials_start_from_the_same_states_whatever_the_policy(env):
    starts = []

    class Recorder(StandStill):
        def step(self, obs, goal):
            if not starts or len(starts[-1]) == 0:
                starts[-1].append(obs["scene_obs"].copy())
            return super().step(obs, goal)

        def reset(self):
            starts.append([])

    for _ in range(2):
        run_task_trials(env, Recorder(), "close_drawer", trials=2, ep_len=2)
    first, second = [s[0] for s in starts[:2]], [s[0] for s in starts[2:]]
    assert all(np.allclose(a, b) for a, b in zip(first, second, strict=True))
    assert not np.allclose(first[0], first[1])  # two different protocol starts
    assert all(s[1] > 0.1 for s in first)  # close_drawer starts with the drawer open (scene_obs[1]: drawer, m)


def test_a_checkpoint_is_tried_on_ray_actors_and_results_keep_task_order(ray_session, tmp_path):
    checkpoint = write_tiny_checkpoint(tmp_path / "model", mmu_condition=False)
    tasks = ("turn_off_led", "open_drawer", "move_slider_left")
    results = evaluate_tasks(checkpoint, tasks, trials=1, ep_len=12, workers=2)
    assert tuple(results) == tasks
    assert all(r.task == t and r.trials == 1 and r.successes == 0 and r.steps == (12,) for t, r in results.items())
    with pytest.raises(ValueError, match="workers"):
        evaluate_tasks(checkpoint, tasks, trials=1, workers=0)

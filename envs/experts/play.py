"""Play episodes: the experts chain tasks from a symbolic start, the way CALVIN's play data flows.

`PlaySession` resets a scene to one of CALVIN's 192 symbolic initial states (spots sampled in that
scene) and then, task after task, reads the symbolic state off the simulator, draws a task that
CALVIN's symbolic model allows there (`envs.symbolic.next_state`), and runs its expert plan to the
end. Each control step goes to a callback (the recorder), so the session itself keeps nothing but
what was attempted. Tasks a plan cannot start (nothing held to place, no block on the table to push
into the drawer) are never drawn: `feasible` checks the scene as the plan will find it.

Example:
    session = PlaySession(PlayTableEnv("A"), np.random.default_rng(0))
    attempts = session.run(num_tasks=8, on_step=lambda obs, action: frames.append(obs))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from envs.experts.policy import task_plan
from envs.experts.states import read_symbolic_state, reset_to_state
from envs.experts.workspace import Workspace
from envs.sequences import initial_states
from envs.symbolic import TASK_ORDER, next_state
from envs.tasks import TaskOracle

# the desk's articulated tasks (sliding door, drawer, LED button, light switch); collect can weight them up
ARTICULATED = ("move_slider_left", "move_slider_right", "open_drawer", "close_drawer", "turn_on_lightbulb",
               "turn_off_lightbulb", "turn_on_led", "turn_off_led")
MAX_PLAN_STEPS = 400  # control steps; every expert plan ends well before (the protocol allows 360)
SETTLE_STEPS = 4  # still steps after a plan, so a released block comes to rest before the next task
DRAWER_REACH = 0.12  # m, a block farther from the drawer's middle (x) is not pushed into the drawer

StepCallback = Callable[[dict, np.ndarray], None]


@dataclass(frozen=True)
class Attempt:
    """One task of a play episode: the steps it took (first, last inclusive) and whether the oracle saw it."""

    task: str
    first_step: int
    last_step: int
    success: bool


class PlaySession:
    """Play episodes in one env, reproducible from `rng`."""

    def __init__(self, env: object, rng: np.random.Generator, oracle: TaskOracle | None = None,
                 task_weights: Mapping[str, float] | None = None) -> None:
        """Bind to a `PlayTableEnv` (any scene); `rng` draws the start states, spots and tasks.

        `task_weights`: relative chance of a task among the valid ones (missing tasks weigh 1); None = uniform.
        """
        self.env, self.rng, self.task_weights = env, rng, task_weights
        self.oracle = oracle or TaskOracle()
        self.ws = Workspace(env)
        self.steps = 0

    def reset(self) -> dict:
        """Reset to a random CALVIN symbolic initial state; returns the first observation."""
        states = initial_states()
        self.steps = 0
        return reset_to_state(self.env, states[self.rng.integers(len(states))], self.rng)

    def run(self, num_tasks: int, on_step: StepCallback) -> list[Attempt]:
        """Reset, then chain up to `num_tasks` expert tasks (fewer if the scene offers none).

        Args:
            num_tasks: tasks to attempt in the episode.
            on_step: called with (observation after the step, the (7,) action taken) at every step;
                it also gets the reset observation first, with action None.
        """
        on_step(self.reset(), None)
        attempts = []
        for _ in range(num_tasks):
            choices = self.valid_tasks()
            if not choices:
                break
            attempts.append(self._attempt(self._draw(choices), on_step))
        return attempts

    def _draw(self, choices: list[str]) -> str:
        if self.task_weights is None:
            return choices[self.rng.integers(len(choices))]
        weights = np.array([self.task_weights.get(t, 1.0) for t in choices])
        return choices[self.rng.choice(len(choices), p=weights / weights.sum())]

    def valid_tasks(self) -> list[str]:
        """Tasks CALVIN's symbolic model allows in the current state that the experts can start here."""
        state = read_symbolic_state(self.ws)
        values = tuple(state.values())
        return [t for i, t in enumerate(TASK_ORDER) if next_state(values, i) is not None and self.feasible(t, state)]

    def feasible(self, task: str, state: dict) -> bool:
        """Physical conditions the symbolic model does not know (block near the drawer, nothing lost)."""
        if "none" in state.values():
            return False
        if task == "push_into_drawer":
            table = [c for c in ("red", "blue", "pink") if state[f"{c}_block"] == "table"]
            return any(abs(self.ws.block(c).position[0] - self.ws.drawer_x()) < DRAWER_REACH for c in table)
        if task.startswith("push_") and task.endswith(("_left", "_right")):
            block = self.ws.block(task.split("_")[1])
            goal = block.position[0] + (0.13 if task.endswith("right") else -0.13)
            (x0, _, _), (x1, _, _) = self.env.layout.surfaces["table"]
            return x0 - 0.1 <= goal <= x1 + 0.05
        return True

    def _attempt(self, task: str, on_step: StepCallback) -> Attempt:
        start_info, first = self.env.get_info(), self.steps + 1
        success = False
        plan = task_plan(task, self.env)
        for action in _bounded(plan, MAX_PLAN_STEPS):
            success |= self._step(action, task, start_info, on_step)
        hold = np.concatenate([np.zeros(6), [float(self.env.robot.gripper_action)]])
        for _ in range(SETTLE_STEPS):
            success |= self._step(hold, task, start_info, on_step)
        return Attempt(task, first, self.steps, success)

    def _step(self, action: np.ndarray, task: str, start_info: dict, on_step: StepCallback) -> bool:
        obs, _, _, info = self.env.step(action)
        self.steps += 1
        on_step(obs, action)
        return bool(self.oracle.get_task_info_for_set(start_info, info, {task}))


def _bounded(plan, limit: int):
    for count, action in enumerate(plan):
        if count >= limit:
            return
        yield action

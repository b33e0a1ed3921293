"""`ExpertPolicy`: CALVIN's policy interface driven by the scripted experts.

The policy is privileged (it holds the env to read the scene) but acts like any learned policy:
`reset()` at each subtask, then `step(obs, instruction)` returns a (7,) relative action. It maps
the instruction back to its task (CALVIN's evaluation or training sentences), plans from the state
the subtask starts in, and after the plan ends keeps the arm still. So experts run through
`envs.protocol` exactly as a model does:

    env = PlayTableEnv("D", cameras=False)
    results = evaluate_chains(env, ExpertPolicy(env), get_sequences(1000)[:100])
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from envs.annotations import SentenceLookup
from envs.experts import articulated, blocks, placing
from envs.experts.motion import Motion, Plan
from envs.experts.workspace import Workspace
from envs.symbolic import TASK_ORDER

_PLANS: dict[str, Callable[[Workspace, Motion], Plan]] = {
    "move_slider_left": lambda ws, m: articulated.move_slider(ws, m, "left"),
    "move_slider_right": lambda ws, m: articulated.move_slider(ws, m, "right"),
    "open_drawer": articulated.open_drawer,
    "close_drawer": articulated.close_drawer,
    "turn_on_led": articulated.press_button,
    "turn_off_led": articulated.press_button,
    "turn_on_lightbulb": lambda ws, m: articulated.flip_switch(ws, m, True),
    "turn_off_lightbulb": lambda ws, m: articulated.flip_switch(ws, m, False),
    "place_in_slider": placing.place_in_slider,
    "place_in_drawer": placing.place_in_drawer,
    "stack_block": placing.stack_block,
    "unstack_block": blocks.unstack_block,
    "push_into_drawer": blocks.push_into_drawer,
}


def _block_plan(task: str, ws: Workspace, motion: Motion) -> Plan:
    """lift_<color>_block_<surface>, push_<color>_block_<side>, rotate_<color>_block_<side>."""
    verb, color, _, where = task.split("_")
    if verb == "lift":
        return blocks.lift_block(ws, motion, color)
    if verb == "push":
        return blocks.push_block(ws, motion, color, 1 if where == "right" else -1)
    return blocks.rotate_block(ws, motion, color, 1 if where == "left" else -1)


def task_plan(task: str, env: object) -> Plan:
    """The expert's moves for `task` from the env's current state; the generator ends with the task.

    Args:
        task: one of CALVIN's 34 task names.
        env: a `PlayTableEnv` (read for planning; stepped by the caller with the yielded actions).
    """
    if task not in TASK_ORDER:
        raise ValueError(f"task: unknown task {task!r}; known: {list(TASK_ORDER)}")
    ws = Workspace(env)
    motion = Motion(env.robot)
    motion.gripper = float(env.robot.gripper_action)
    plan = _PLANS[task](ws, motion) if task in _PLANS else _block_plan(task, ws, motion)
    yield from plan


def make_plan(task: str, env: object) -> Plan:
    """`task_plan`, then the arm holds its last commanded pose and gripper forever."""
    plan = task_plan(task, env)
    yield from plan
    hold = Motion(env.robot)
    hold.gripper = float(env.robot.gripper_action)
    yield from hold.hold()


class ExpertPolicy:
    """Scripted experts behind CALVIN's `reset()` / `step(obs, goal)` (see `envs.base.Policy`)."""

    def __init__(self, env: object, lookup: SentenceLookup | None = None) -> None:
        """Bind to the `PlayTableEnv` the policy will be stepped in; `lookup` maps sentences to tasks."""
        self.env = env
        self.lookup = lookup or SentenceLookup()
        self.task: str | None = None
        self._plan: Plan | None = None

    def reset(self) -> None:
        """Start a new subtask: the next `step` plans from the state it finds."""
        self.task, self._plan = None, None

    def step(self, obs: dict, goal: str) -> np.ndarray:
        """The next action of the expert for instruction `goal` (a (7,) relative action)."""
        task = self.lookup.task(goal)
        if self._plan is None or task != self.task:
            self.task, self._plan = task, make_plan(task, self.env)
        return next(self._plan)

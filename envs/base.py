"""The interfaces every environment and policy in the project speaks: CALVIN's.

An environment (our PlayTable simulator, the real `calvin_env` through its adapter, or the real
Franka) exposes CALVIN's `PlayTableSimEnv` surface, so CALVIN users' code and ours are
interchangeable; a policy exposes CALVIN's `CalvinBaseModel` surface (`reset()` at the start of
every subtask, `step(obs, goal)` every control step).

Observation dict (CALVIN's `get_obs()`):
    {"rgb_obs": {"rgb_static": (200, 200, 3) uint8, "rgb_gripper": (84, 84, 3) uint8},
     "depth_obs": {"depth_static": (200, 200) float32, "depth_gripper": (84, 84) float32},
     "robot_obs": (15,) float64, "scene_obs": (24,) float64}
Action: a (7,) array of CALVIN relative actions: xyz and euler-xyz deltas in [-1, 1]
(x 0.02 m, x 0.05 rad per step) and the gripper, exactly -1 (close) or 1 (open).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

Observation = dict[str, Any]
Info = dict[str, Any]


@runtime_checkable
class SimEnv(Protocol):
    """CALVIN's environment surface."""

    def reset(self, robot_obs: np.ndarray | None = None, scene_obs: np.ndarray | None = None) -> Observation:
        """Reset to the given robot/scene state (or a sampled one) and return the observation."""

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, Info]:
        """Apply one control step; CALVIN's gym 4-tuple (obs, reward 0, done False, info)."""

    def get_obs(self) -> Observation:
        """The current observation dict."""

    def get_info(self) -> Info:
        """CALVIN's info dict (robot_info + scene_info), the input of the task oracle."""

    def close(self) -> None:
        """Release the simulator or robot."""


@runtime_checkable
class Policy(Protocol):
    """CALVIN's `CalvinBaseModel` surface."""

    def reset(self) -> None:
        """Called at the start of every subtask (CALVIN calls it before each instruction)."""

    def step(self, obs: Observation, goal: str) -> np.ndarray:
        """The (7,) relative action for this control step, given the observation and the instruction."""

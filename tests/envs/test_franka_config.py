"""The Franka safety limits are validated when params.yaml loads (envs/franka/config.py `FrankaConfig.validate`).

Every case goes through the real loader with a `--set`-style override, as an operator's typo would,
and must fail naming the key (the loader itself refuses non-finite numbers, naming the list item). A
config built in code skips the loader: FrankaEnv validates it again (tests/envs/test_franka_env.py).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from components.core.config import ConfigError, load_config
from envs.franka.config import PANDA_JOINT_LIMITS_RAD

HOME = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]


def with_joint(index: int, angle: float) -> list[float]:
    joints = list(HOME)
    joints[index] = angle
    return joints


@pytest.mark.parametrize("key, value, message", [
    ("max_step_translation", math.inf, "must be finite"),
    ("max_step_translation", math.nan, "must be finite"),
    ("max_step_translation", 0.2, "<= 0.1"),
    ("max_step_translation", 0.0, "must be > 0"),
    ("max_step_rotation", math.inf, "must be finite"),
    ("max_step_rotation", 0.6, "<= 0.5"),
    ("max_tilt", math.nan, "must be finite"),
    ("max_tilt", 2.0, "<= 1.571"),
    ("workspace_min", [0.25, -math.inf, 0.05], "must be finite"),
    ("workspace_max", [math.nan, 0.35, 0.65], "must be finite"),
    ("workspace_max", [0.75, 0.35, math.inf], "must be finite"),
    ("workspace_max", [0.25, 0.35, 0.65], "x must exceed workspace_min"),
    ("workspace_max", [0.75, 0.35, 0.01], "z must exceed workspace_min"),
    ("home_joints", with_joint(0, 100.0), "joint 1 at 100.0 rad is outside the Panda's range"),
    ("home_joints", with_joint(3, 0.0), r"joint 4 at 0.0 rad is outside the Panda's range \[-3.0718, -0.0698\]"),
    ("home_joints", with_joint(5, -0.5), "joint 6"),
    ("home_joints", with_joint(6, math.nan), "must be finite"),
    ("home_joints", HOME[:6], "expected 7 joint angles"),
    ("connect_timeout_s", math.inf, "must be finite"),
])
def test_unsafe_limits_are_refused_at_load_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=rf"^robot\.franka\.{key}(\[\d\])?: .*{message}"):
        load_config(overrides={f"robot.franka.{key}": value})


def test_the_shipped_limits_and_the_joint_range_edges_are_accepted():
    cfg = load_config().robot.franka
    cfg.validate()
    replace(cfg, home_joints=tuple(lo for lo, _ in PANDA_JOINT_LIMITS_RAD), max_step_translation=0.1,
            max_step_rotation=0.5, max_tilt=math.pi / 2).validate()
    replace(cfg, home_joints=tuple(hi for _, hi in PANDA_JOINT_LIMITS_RAD)).validate()

"""envs.describe: the scene description the MMU-conditioned prompt is trained to generate."""

from __future__ import annotations

import numpy as np
import pytest

from envs.describe import block_places, describe_scene
from envs.experts.policy import task_plan
from envs.playtable import PlayTableEnv

# scene D blocks in scene_obs order: red, blue, pink
ON_TABLE = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                     0.10, -0.10, 0.46, 0.0, 0.0, 0.0,
                     -0.10, -0.02, 0.46, 0.0, 0.0, 0.0,
                     0.0, 0.10, 0.46, 0.0, 0.0, 0.0])


def scene_with(**entries: float) -> np.ndarray:
    """ON_TABLE with some entries (door, drawer, bulb, led, or <colour>_<axis>) replaced."""
    index = {"door": 0, "drawer": 1, "bulb": 4, "led": 5}
    for i, color in enumerate(("red", "blue", "pink")):
        index |= {f"{color}_{axis}": 6 + 6 * i + k for k, axis in enumerate("xyz")}
    obs = ON_TABLE.copy()
    for key, value in entries.items():
        obs[index[key]] = value
    return obs


def test_same_state_same_words_and_articulation_states():
    obs = scene_with(door=0.25, drawer=0.2, bulb=1.0)
    text = describe_scene(obs, "D")
    assert text == describe_scene(obs.copy(), "D")
    assert "drawer open, door left, bulb on, led off." in text
    closed = describe_scene(scene_with(drawer=0.0, led=1.0), "D")
    assert "drawer closed, door right, bulb off, led on." in closed
    assert "drawer half open" in describe_scene(scene_with(drawer=0.1), "D")


def test_block_places_follow_the_scene_block_order():
    # pink at y=0.10 lies in the cabinet; scene A's scene_obs order is pink, blue, red
    assert block_places(ON_TABLE, "D") == {"red": "table", "blue": "table", "pink": "cabinet"}
    assert block_places(ON_TABLE, "A") == {"pink": "table", "blue": "table", "red": "cabinet"}


def test_left_right_and_front_behind_relations():
    text = describe_scene(ON_TABLE, "D")
    # blue (x=-0.10, y=-0.02) is left of and behind red (x=0.10, y=-0.10)
    assert text.startswith("blue block left of and behind red block on the table. pink block in the cabinet.")
    side_by_side = describe_scene(scene_with(blue_y=-0.09), "D")
    assert side_by_side.startswith("blue block left of red block on the table.")


def test_stacked_drawer_floor_and_held_blocks():
    stacked = scene_with(blue_x=0.10, blue_y=-0.10, blue_z=0.50)
    assert "blue block stacked on red block" in describe_scene(stacked, "D")
    assert "pink block in the drawer" in describe_scene(scene_with(pink_y=-0.3, pink_z=0.38), "D")
    assert "red block on the floor" in describe_scene(scene_with(red_z=0.05), "D")
    lifted = scene_with(red_z=0.60)
    robot = np.zeros(15)
    robot[:3], robot[14] = (0.10, -0.10, 0.61), -1.0
    assert "red block lifted" in describe_scene(lifted, "D")
    assert "gripper holds red block" in describe_scene(lifted, "D", robot)
    robot[14] = 1.0  # an open gripper holds nothing
    assert "gripper empty" in describe_scene(lifted, "D", robot)


@pytest.mark.parametrize("bad", [np.zeros(23), np.full(24, np.nan)])
def test_bad_scene_obs_is_rejected(bad):
    with pytest.raises(ValueError, match="scene_obs"):
        describe_scene(bad, "D")


def test_describes_the_simulator_after_an_expert_opens_the_drawer():
    with PlayTableEnv("D", cameras=False, seed=3) as env:
        obs = env.reset()
        assert "drawer closed" in describe_scene(obs["scene_obs"], "D", obs["robot_obs"])
        for action in task_plan("open_drawer", env):
            obs, _, _, _ = env.step(action)
        assert "drawer open" in describe_scene(obs["scene_obs"], "D", obs["robot_obs"])

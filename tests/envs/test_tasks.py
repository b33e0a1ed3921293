"""The 34-task oracle: every rule fires on a change built for it and not on a near miss.

Info dicts are built by hand in CALVIN's `get_info()` structure (contacts are pybullet tuples whose
[2] is the other body and [4] its link), then a few cases are rebuilt from real PlayTable states.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pybullet
import pytest

from envs.symbolic import TASK_ORDER
from envs.tasks import TaskOracle, load_eval_instructions

ROBOT, TABLE = 0, 3
UIDS = {"block_red": 4, "block_blue": 5, "block_pink": 6}
BASE, DRAWER, PLANK = -1, 3, 6
LINKS = {"button_link": 0, "switch_link": 1, "slide_link": 2, "drawer_link": 3, "led_link": 4, "light_link": 5,
         "plank_link": 6, "base_link": -1}


def touch(uid: int, link: int = -1) -> tuple:
    return (0, 0, uid, -1, link)


def quat(yaw_deg: float, roll_deg: float = 0.0) -> tuple:
    return pybullet.getQuaternionFromEuler([math.radians(roll_deg), 0.0, math.radians(yaw_deg)])


def make_info() -> dict:
    """A resting scene: every block alone on the table, doors closed, lights off, robot touching nothing."""
    blocks = {name: {"current_pos": (0.1 * i, -0.12, 0.46), "current_orn": quat(90), "current_lin_vel": (0, 0, 0),
                     "current_ang_vel": (0, 0, 0), "contacts": [touch(TABLE, BASE)], "uid": uid}
              for i, (name, uid) in enumerate(UIDS.items())}
    return {
        "robot_info": {"uid": ROBOT, "contacts": []},
        "scene_info": {
            "fixed_objects": {"table": {"uid": TABLE, "links": dict(LINKS), "contacts": []}},
            "movable_objects": blocks,
            "doors": {"base__slide": {"current_state": 0.1}, "base__drawer": {"current_state": 0.1}},
            "buttons": {"base__button": {"joint_state": 0.0, "logical_state": 0}},
            "switches": {"base__switch": {"joint_state": 0.0, "logical_state": 0}},
            "lights": {"lightbulb": {"logical_state": 0}, "led": {"logical_state": 0}},
        },
    }


def block(info: dict, name: str) -> dict:
    return info["scene_info"]["movable_objects"][name]


def shift(name: str, axis: int, delta: float):
    def change(start, end):
        pos = list(block(end, name)["current_pos"])
        pos[axis] += delta
        block(end, name)["current_pos"] = tuple(pos)
    return change


def rotate(name: str, degrees: float, roll: float = 0.0):
    def change(start, end):
        block(end, name)["current_orn"] = quat(90 + degrees, roll)
    return change


def joint(name: str, delta: float):
    def change(start, end):
        end["scene_info"]["doors"][name]["current_state"] += delta
    return change


def light(name: str, before: int, after: int):
    def change(start, end):
        start["scene_info"]["lights"][name]["logical_state"] = before
        end["scene_info"]["lights"][name]["logical_state"] = after
    return change


HELD = (touch(ROBOT, 10),)


def lift(name: str, rise: float, surface_link: int = BASE, end_contacts=HELD):
    def change(start, end):
        block(start, name)["contacts"] = [touch(TABLE, surface_link)]
        shift(name, 2, rise)(start, end)
        block(end, name)["contacts"] = list(end_contacts)
    return change


def place(name: str, link: int, robot_keeps: bool = False):
    def change(start, end):
        start["robot_info"]["contacts"] = [touch(UIDS[name], -1)]
        block(start, name)["contacts"] = [touch(ROBOT, 9)]
        end["robot_info"]["contacts"] = [touch(UIDS[name], -1)] if robot_keeps else []
        block(end, name)["contacts"] = [touch(TABLE, link)]
    return change


def stack(velocity: float = 0.0):
    def change(start, end):
        block(start, "block_red")["contacts"] = [touch(ROBOT, 9)]
        block(end, "block_red")["contacts"] = [touch(UIDS["block_blue"])]
        block(end, "block_red")["current_lin_vel"] = (0.0, 0.0, -velocity)
    return change


def unstack(stays_on_block: bool = False):
    def change(start, end):
        block(start, "block_red")["contacts"] = [touch(UIDS["block_blue"])]
        block(end, "block_red")["contacts"] = [touch(TABLE, BASE)] + ([touch(UIDS["block_blue"])] * stays_on_block)
    return change


def into_drawer(robot_at_start: bool = False, lands_on: int = DRAWER):
    def change(start, end):
        block(start, "block_pink")["contacts"] = [touch(TABLE, BASE)] + [touch(ROBOT, 9)] * robot_at_start
        block(end, "block_pink")["contacts"] = [touch(TABLE, lands_on)]
    return change


def cases() -> list[tuple[str, object, object]]:
    """(task, change that fires it, near-miss change) for all 34 tasks."""
    out = []
    for colour in ("red", "blue", "pink"):
        name = f"block_{colour}"
        out += [
            (f"rotate_{colour}_block_right", rotate(name, -70), rotate(name, -55)),
            (f"rotate_{colour}_block_left", rotate(name, 70), rotate(name, 70, roll=35)),
            (f"push_{colour}_block_right", shift(name, 0, 0.12), shift(name, 0, 0.09)),
            (f"push_{colour}_block_left", shift(name, 0, -0.12), shift(name, 1, -0.12)),
            (f"lift_{colour}_block_table", lift(name, 0.06), lift(name, 0.04)),
            (f"lift_{colour}_block_slider", lift(name, 0.04, PLANK), lift(name, 0.04, BASE)),
            (f"lift_{colour}_block_drawer", lift(name, 0.06, DRAWER),
             lift(name, 0.06, DRAWER, (touch(ROBOT, 10), touch(TABLE, DRAWER)))),
        ]
    out += [
        ("move_slider_left", joint("base__slide", 0.16), joint("base__slide", 0.14)),
        ("move_slider_right", joint("base__slide", -0.16), joint("base__slide", -0.14)),
        ("open_drawer", joint("base__drawer", 0.13), joint("base__drawer", 0.11)),
        ("close_drawer", joint("base__drawer", -0.13), joint("base__drawer", 0.13)),
        ("place_in_slider", place("block_blue", PLANK), place("block_blue", BASE)),
        ("place_in_drawer", place("block_red", DRAWER), place("block_red", DRAWER, robot_keeps=True)),
        ("stack_block", stack(), stack(velocity=1.5)),
        ("unstack_block", unstack(), unstack(stays_on_block=True)),
        ("turn_on_lightbulb", light("lightbulb", 0, 1), light("lightbulb", 1, 1)),
        ("turn_off_lightbulb", light("lightbulb", 1, 0), light("led", 1, 0)),
        ("turn_on_led", light("led", 0, 1), light("lightbulb", 0, 1)),
        ("turn_off_led", light("led", 1, 0), light("led", 0, 0)),
        ("push_into_drawer", into_drawer(), into_drawer(robot_at_start=True)),
    ]
    return out


CASES = cases()


def apply(change) -> tuple[dict, dict]:
    start = make_info()
    end = copy.deepcopy(start)
    change(start, end)
    return start, end


@pytest.fixture(scope="module")
def oracle():
    return TaskOracle()


def test_cases_cover_all_34_tasks_and_instructions(oracle):
    assert sorted(t for t, _, _ in CASES) == sorted(TASK_ORDER) == sorted(oracle.task_names)
    assert set(load_eval_instructions()) == set(TASK_ORDER)


@pytest.mark.parametrize(("task", "fires", "near_miss"), CASES, ids=[c[0] for c in CASES])
def test_rule_fires_and_not_on_near_miss(oracle, task, fires, near_miss):
    start, end = apply(fires)
    assert task in oracle.get_task_info(start, end)
    assert oracle.get_task_info_for_set(start, end, {task}) == {task}
    start, end = apply(near_miss)
    assert task not in oracle.get_task_info(start, end)
    assert oracle.get_task_info_for_set(start, end, {task}) == set()


def test_nothing_fires_without_change(oracle):
    start, end = apply(lambda s, e: None)
    assert oracle.get_task_info(start, end) == set()


def test_push_into_drawer_also_needs_the_drawer_link(oracle):
    start, end = apply(into_drawer(lands_on=BASE))
    assert "push_into_drawer" not in oracle.get_task_info(start, end)


def test_unknown_task_filter_is_rejected(oracle):
    start, end = apply(lambda s, e: None)
    with pytest.raises(ValueError, match="unknown task"):
        oracle.get_task_info_for_set(start, end, {"open_the_pod_bay_doors"})


def test_unknown_rule_in_yaml_is_rejected(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text("tasks:\n  fly: [levitate, 'block_red']\n")
    with pytest.raises(ValueError, match="unknown rule 'levitate'"):
        TaskOracle(path)


# --------------------------------------------------------------------------- real PlayTable states


@pytest.fixture(scope="module")
def env():
    from envs.playtable import PlayTableEnv

    environment = PlayTableEnv("D", cameras=False)
    yield environment
    environment.close()


def _state(env, scene_obs: np.ndarray) -> dict:
    env.reset(scene_obs=scene_obs)
    return env.get_info()


def _scene(drawer: float = 0.0) -> np.ndarray:
    scene_obs = np.zeros(24)
    scene_obs[1] = drawer
    scene_obs[6:12] = (0.05, -0.12, 0.46, 0, 0, 1.5)  # red on the table
    scene_obs[12:18] = (0.23, -0.12, 0.46, 0, 0, 1.5)  # blue on the table
    scene_obs[18:24] = (-0.24, 0.0924, 0.46099, 0, 0, 1.5)  # pink on the shelf (slider_left)
    return scene_obs


def test_real_states_rotate_push_stack(env, oracle):
    start = _state(env, _scene())
    rotated = _scene()
    rotated[11] += math.radians(70)
    assert oracle.get_task_info(start, _state(env, rotated)) == {"rotate_red_block_left"}
    rotated[11] = 1.5 + math.radians(50)
    assert oracle.get_task_info(start, _state(env, rotated)) == set()
    pushed = _scene()
    pushed[6] -= 0.11
    assert oracle.get_task_info(start, _state(env, pushed)) == {"push_red_block_left"}
    stacked = _scene()
    stacked[6:9] = (0.23, -0.12, 0.50)  # red resting on blue (4 cm blocks)
    assert "stack_block" in oracle.get_task_info(start, _state(env, stacked))
    assert "unstack_block" in oracle.get_task_info(_state(env, stacked), _state(env, _scene()))


def test_real_states_drawer_and_push_into_drawer(env, oracle):
    start = _state(env, _scene(drawer=0.22))
    info = start["scene_info"]["movable_objects"]["block_pink"]
    assert {(c[2], c[4]) for c in info["contacts"]} == {(env.scene.table_uid, 6)}  # on the plank link
    inside = _scene(drawer=0.22)
    drawer_floor = env.scene.link_pose("drawer_link")[0][2] + 0.008 + 0.02 - 1e-5  # resting, as CALVIN's spots
    inside[6:9] = (0.18, -0.30, drawer_floor)  # red in the open part of the drawer
    assert oracle.get_task_info(start, _state(env, inside)) == {"push_into_drawer"}
    assert oracle.get_task_info(_state(env, _scene()), start) == {"open_drawer"}

"""The real-CALVIN adapter (`envs.calvin`): the experts' view of calvin_env's objects, and close().

calvin_env is not on PyPI and CI cannot reach GitHub, so these tests drive `CalvinEnv.wrap` through
`tests/fixtures/calvin_sim.py`, a STAND-IN for calvin_env's `PlayTableSimEnv`: calvin_env's attribute
names (robot_uid, tcp_link_id, fixed_objects, movable_objects, doors/buttons/switches with joint_index,
lights with get_state(), info_dict["links"], and its close()/__del__ that disconnect `cid`) over our
PlayTable simulator. What they check: every read the experts make through the adapter equals what they
read on PlayTable; an expert plan through the adapter yields the same actions and solves its task;
closing an env keeps its later garbage collection from disconnecting a new env that got the same client
id; a desk or robot the experts cannot plan for is refused, naming the file.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from envs.calvin import CalvinEnv
from envs.experts import make_plan
from envs.experts.states import read_symbolic_state, scene_obs_for_state
from envs.experts.workspace import Workspace
from envs.playtable import PlayTableEnv, load_layout
from envs.playtable.scene import BUTTON, DOORS, SWITCH, TABLE_LINKS
from envs.sequences import initial_condition_to_obs, initial_states
from envs.tasks import TaskOracle
from tests.fixtures.calvin_sim import FakeCalvinSim

JOINTS = (*DOORS, BUTTON, SWITCH)


@pytest.fixture()
def pair():
    """A PlayTable env and a CalvinEnv over the stand-in, both in the same start state: LED on, drawer closed."""
    state = next(s for s in initial_states() if s["led"] == 1 and s["drawer"] == "closed" and s["lightbulb"] == 0)
    start = initial_condition_to_obs(state)
    reference, calvin = PlayTableEnv("D", cameras=False), CalvinEnv.wrap(FakeCalvinSim("D"))
    for env in (reference, calvin):
        env.reset(*start)
    yield reference, calvin
    reference.close()
    calvin.close()


def test_scene_robot_and_layout_views_read_what_playtable_reads(pair):
    reference, calvin = pair
    calvin.step(np.array([0.3, -0.2, -0.5, 0.1, 0.0, 0.2, -1.0]))  # off the reset pose, gripper closing
    reference.step(np.array([0.3, -0.2, -0.5, 0.1, 0.0, 0.2, -1.0]))
    ours, theirs = reference.scene, calvin.scene
    assert theirs.table_uid == ours.table_uid and theirs.block_uids == ours.block_uids
    assert theirs.lights == ours.lights == {"lightbulb": 0, "led": 1}
    for joint in JOINTS:
        assert theirs.joint_state(joint) == ours.joint_state(joint)
        assert theirs.joint_range(joint) == ours.joint_range(joint)
        np.testing.assert_array_equal(theirs.handle_position(joint), ours.handle_position(joint))
        np.testing.assert_array_equal(theirs.joint_direction(joint), ours.joint_direction(joint))
    for link in TABLE_LINKS:
        np.testing.assert_array_equal(np.concatenate(theirs.link_pose(link)), np.concatenate(ours.link_pose(link)))
    for name in ours.block_names:
        np.testing.assert_array_equal(np.concatenate(theirs.block_pose(name)), np.concatenate(ours.block_pose(name)))
    assert calvin.robot.uid == reference.robot.uid and calvin.robot.gripper_action == -1.0
    np.testing.assert_array_equal(calvin.robot.target_pos, reference.robot.target_pos)
    np.testing.assert_array_equal(calvin.robot.target_orn, reference.robot.target_orn)
    np.testing.assert_array_equal(calvin.robot.tcp_pose()[0], reference.robot.tcp_pose()[0])
    np.testing.assert_array_equal(calvin.robot.tcp_pose()[1], reference.robot.tcp_pose()[1])
    layout, expected = calvin.layout, load_layout("D")
    assert (layout.name, layout.joints, layout.surfaces) == (expected.name, expected.joints, expected.surfaces)
    assert layout.robot_base_position == expected.robot_base_position
    np.testing.assert_allclose(layout.robot_base_orientation, expected.robot_base_orientation, atol=1e-12)
    assert layout.robot_initial_joint_positions == expected.robot_initial_joint_positions
    assert [b.name for b in layout.blocks] == [b.name for b in expected.blocks]
    np.testing.assert_allclose([b.size for b in layout.blocks], [b.size for b in expected.blocks], rtol=1e-12)


def test_symbolic_states_round_trip_through_the_adapter(pair):
    _, calvin = pair
    ws, rng = Workspace(calvin), np.random.default_rng(0)
    for index in rng.choice(len(initial_states()), 6, replace=False):
        state = initial_states()[index]
        calvin.reset(*initial_condition_to_obs(state))
        assert read_symbolic_state(ws) == state
        assert scene_obs_for_state(calvin, state, np.random.default_rng(1)).shape == (24,)


@pytest.mark.parametrize("task", ["turn_off_led", "open_drawer"])
def test_an_expert_plan_through_the_adapter_acts_as_on_playtable_and_solves_its_task(pair, task):
    reference, calvin = pair
    oracle, start = TaskOracle(), calvin.get_info()
    plans = make_plan(task, reference), make_plan(task, calvin)
    solved = False
    for _ in range(120):
        actions = next(plans[0]), next(plans[1])
        np.testing.assert_array_equal(actions[1], actions[0])
        reference.step(actions[0])
        solved |= bool(oracle.get_task_info_for_set(start, calvin.step(actions[1])[3], {task}))
    assert solved


def test_closing_keeps_the_old_env_from_disconnecting_a_new_one_with_the_same_client_id():
    first = CalvinEnv.wrap(FakeCalvinSim("D"))
    cid = first.env.cid
    first.close()
    first.close()  # idempotent
    second = CalvinEnv.wrap(FakeCalvinSim("D"))
    assert second.env.cid == cid  # pybullet reused the freed id: the case in which CALVIN's __del__ hurts
    del first
    gc.collect()  # the first PlayTableSimEnv's __del__ runs close() again
    obs, _, _, _ = second.step(np.array([0, 0, 0.5, 0, 0, 0, 1.0]))
    assert obs["robot_obs"].shape == (15,)
    second.close()


def test_a_desk_or_robot_the_experts_cannot_plan_for_is_refused_naming_the_file(tmp_path):
    sim = FakeCalvinSim("D", table_file=tmp_path / "kitchen_table.urdf")
    with pytest.raises(ValueError, match="kitchen_table.urdf: not one of CALVIN's tables"):
        CalvinEnv.wrap(sim)
    sim.scene.fixed_objects[0].info_dict["links"] = {**TABLE_LINKS, "plank_link": 7}
    with pytest.raises(ValueError, match=r"kitchen_table.urdf: not a CALVIN desk .*links"):
        CalvinEnv.wrap(sim)
    sim = FakeCalvinSim("D", euler_obs=False)  # (the refused sims disconnect when collected, as CALVIN's do)
    with pytest.raises(ValueError, match="panda_longer_finger.urdf: robot.euler_obs is false"):
        CalvinEnv.wrap(sim)

"""PlayTableEnv: CALVIN's observation/info structure, exact resets, determinism, errors, desk logic."""

from __future__ import annotations

import numpy as np
import pytest

from envs.base import SimEnv
from envs.playtable import SCENES, PlayTableEnv
from envs.playtable.cameras import StaticCamera
from envs.sequences import get_sequences, initial_condition_to_obs

REST = np.array([0, 0, 0, 0, 0, 0, 1.0])


@pytest.fixture(scope="module")
def chains():
    return get_sequences(1000)


@pytest.fixture(scope="module")
def env():
    environment = PlayTableEnv("D")
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def state_env():
    environment = PlayTableEnv("D", cameras=False)
    yield environment
    environment.close()


def wiggle(steps: int) -> list[np.ndarray]:
    """Relative actions that move the arm around above the table and close/open the gripper."""
    t = np.arange(steps)[:, None]
    motion = 0.8 * np.sin(t / np.array([[4.0, 5.0, 3.0, 6.0, 7.0, 5.0]]))
    return list(np.concatenate([motion, np.where(t % 20 < 10, 1.0, -1.0)], axis=1))


def test_observation_and_info_structure(env, chains):
    assert isinstance(env, SimEnv)
    obs = env.reset(*initial_condition_to_obs(chains[0][0]))
    assert obs["rgb_obs"]["rgb_static"].shape == (200, 200, 3) and obs["rgb_obs"]["rgb_static"].dtype == np.uint8
    assert obs["rgb_obs"]["rgb_gripper"].shape == (84, 84, 3) and obs["rgb_obs"]["rgb_gripper"].dtype == np.uint8
    assert obs["depth_obs"]["depth_static"].shape == (200, 200) and obs["depth_obs"]["depth_static"].dtype == np.float32
    assert obs["depth_obs"]["depth_gripper"].shape == (84, 84) and obs["depth_obs"]["depth_gripper"].dtype == np.float32
    assert 0.01 <= obs["depth_obs"]["depth_static"].min() and obs["depth_obs"]["depth_static"].max() <= 10
    assert obs["robot_obs"].shape == (15,) and obs["robot_obs"].dtype == np.float64
    assert obs["scene_obs"].shape == (24,) and obs["scene_obs"].dtype == np.float64
    assert len(env.robot_obs_labels) == 15 and len(env.scene_obs_labels) == 24
    step_obs, reward, done, info = env.step(REST)
    assert (reward, done) == (0, False) and set(step_obs) == set(obs)
    assert set(info) == {"robot_info", "scene_info"}
    assert {"uid", "contacts", "tcp_pos", "tcp_orn", "gripper_opening_width", "arm_joint_states",
            "gripper_action"} <= set(info["robot_info"])
    scene = info["scene_info"]
    assert set(scene) == {"fixed_objects", "movable_objects", "doors", "buttons", "switches", "lights"}
    assert scene["fixed_objects"]["table"]["links"] == {
        "button_link": 0, "switch_link": 1, "slide_link": 2, "drawer_link": 3, "led_link": 4, "light_link": 5,
        "plank_link": 6, "base_link": -1}
    assert list(scene["movable_objects"]) == ["block_red", "block_blue", "block_pink"]
    assert set(scene["doors"]) == {"base__slide", "base__drawer"}
    assert scene["lights"]["lightbulb"]["logical_state"] == 1 and scene["lights"]["led"]["logical_state"] == 1


def test_desk_joints_have_calvins_names_and_world_ranges(state_env):
    scene = state_env.scene
    assert [n for n in scene.joint_ids][:7] == ["base__button", "base__switch", "base__slide", "base__drawer",
                                                "base__led", "base__light", "base__plank"]
    expected = {"base__slide": 0.28, "base__drawer": 0.22, "base__button": 0.02, "base__switch": 0.088}
    for name, upper in expected.items():
        assert scene.joint_range(name) == pytest.approx((0, upper))


def test_reset_to_chain_states_reproduces_scene_obs(state_env, chains):
    for state, _ in chains[:60]:
        robot_obs, scene_obs = initial_condition_to_obs(state)
        obs = state_env.reset(robot_obs, scene_obs)
        assert np.array_equal(obs["scene_obs"][:6], scene_obs[:6])
        np.testing.assert_allclose(obs["scene_obs"], scene_obs, rtol=0, atol=1e-12)  # euler -> quaternion -> euler
        np.testing.assert_allclose(obs["robot_obs"][7:14], robot_obs[7:14], rtol=0, atol=1e-12)
        np.testing.assert_allclose(obs["robot_obs"][:6], robot_obs[:6], rtol=0, atol=2e-4)  # CALVIN's TCP too
        assert obs["robot_obs"][6] == pytest.approx(robot_obs[6], abs=1e-12) and obs["robot_obs"][14] == 1
        info = state_env.get_info()
        for block in info["scene_info"]["movable_objects"].values():  # every block rests on something at once
            assert block["contacts"]


def test_seeded_rollout_is_deterministic(chains):
    start = initial_condition_to_obs(chains[3][0])
    actions = wiggle(25)
    runs = []
    for _ in range(2):
        with PlayTableEnv("D", seed=0) as environment:
            environment.reset(*start)
            runs.append([environment.step(a)[0] for a in actions])
    with PlayTableEnv("D", seed=0) as environment:  # and a used env, reset again, repeats it too
        for _ in range(2):
            environment.reset(*start)
            environment.step(wiggle(7)[3])
            environment.reset(*start)
            runs.append([environment.step(a)[0] for a in actions])
    for run in runs[1:]:
        for a, b in zip(runs[0], run, strict=True):
            assert np.array_equal(a["robot_obs"], b["robot_obs"]) and np.array_equal(a["scene_obs"], b["scene_obs"])
            assert np.array_equal(a["rgb_obs"]["rgb_static"], b["rgb_obs"]["rgb_static"])
            assert np.array_equal(a["depth_obs"]["depth_gripper"], b["depth_obs"]["depth_gripper"])


def test_sampled_resets_follow_the_seed():
    with PlayTableEnv("B", cameras=False, seed=7) as a, PlayTableEnv("B", cameras=False, seed=7) as b:
        assert np.array_equal(a.reset()["scene_obs"], b.reset()["scene_obs"])
        assert not np.array_equal(a.reset()["scene_obs"], a.reset()["scene_obs"])


def test_layered_static_camera_renders_the_same_image_as_a_full_render(env, chains):
    full = StaticCamera(env.p)

    def check(obs):
        rgb, depth = full.render()
        assert np.any(rgb != obs["rgb_obs"]["rgb_static"], axis=-1).mean() < 1e-3  # only depth ties may differ
        assert np.mean(depth != obs["depth_obs"]["depth_static"]) < 1e-3

    for state, _ in chains[:3]:  # each reset changes doors and lights: the desk layer must follow
        env.reset(*initial_condition_to_obs(state))
        for action in wiggle(12)[::4]:
            check(env.step(action)[0])
    drawer = env.scene.joint_ids["base__drawer"]
    env.p.resetJointState(env.scene.table_uid, drawer, 0.11 if env.scene.joint_state("base__drawer") < 0.1 else 0.0)
    check(env.get_obs())


def test_relative_actions_integrate_on_the_commanded_target(state_env, chains):
    obs = state_env.reset(*initial_condition_to_obs(chains[0][0]))
    start = obs["robot_obs"][:3].copy()
    for _ in range(10):
        obs = state_env.step(np.array([1, 0, 0, 0, 0, 0, 1.0]))[0]
    np.testing.assert_allclose(state_env.robot.target_pos - start, [0.2, 0, 0], atol=1e-12)
    for _ in range(15):
        obs = state_env.step(REST)[0]
    np.testing.assert_allclose(obs["robot_obs"][:3] - start, [0.2, 0, 0], atol=0.01)
    for _ in range(15):
        obs = state_env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))[0]
    assert obs["robot_obs"][6] < 0.005 and obs["robot_obs"][14] == -1
    target = (start + [0, 0.05, 0], obs["robot_obs"][3:6], 1)  # absolute action, open again
    for _ in range(25):
        obs = state_env.step(target)[0]
    np.testing.assert_allclose(obs["robot_obs"][:3], target[0], atol=0.01)
    assert obs["robot_obs"][6] > 0.075


@pytest.mark.parametrize(("action", "message"), [
    (np.zeros(6), r"shape \(6,\)"),
    (np.array([0, 0, np.nan, 0, 0, 0, 1.0]), "finite"),
    (np.array([0, 0, 0, 0, 0, 0, 0.0]), "gripper"),
    (np.array([0, 0, 0, 0, 0, 0, 0.5]), "gripper"),
    (((0, 0, 0.5), (0, 0), 1), "absolute action"),
    (((0, 0, 0.5), (3.1, 0, 1.5), 0), "gripper"),
])
def test_malformed_actions_are_rejected(state_env, action, message):
    before = state_env.robot.target_pos.copy()
    with pytest.raises(ValueError, match=message):
        state_env.step(action)
    assert np.array_equal(state_env.robot.target_pos, before)  # a rejected action changes nothing


def test_inconsistent_states_are_rejected(state_env, chains):
    robot_obs, scene_obs = initial_condition_to_obs(chains[0][0])
    for index, value, message in ((1, 0.3, "base__drawer"), (4, 0.0, "lightbulb"), (5, 0.5, "led")):
        bad = scene_obs.copy()
        bad[index] = value
        with pytest.raises(ValueError, match=message):
            state_env.reset(robot_obs, bad)
    with pytest.raises(ValueError, match="scene_obs"):
        state_env.reset(robot_obs, scene_obs[:20])
    with pytest.raises(ValueError, match="robot_obs"):
        state_env.reset(robot_obs[:14], scene_obs)
    with pytest.raises(ValueError, match="scene"):
        PlayTableEnv("E")


def test_recorded_states_just_past_a_joint_limit_reset_clipped(state_env, chains):
    # pybullet's limits are soft: recorded frames hold e.g. a pressed button 2.6 mm past its range
    robot_obs, scene_obs = initial_condition_to_obs(chains[0][0])
    near = scene_obs.copy()
    near[2], near[0] = 0.0226, -0.0011  # button (range [0, 0.02]), sliding door (range [0, 0.28])
    obs = state_env.reset(robot_obs, near)
    assert obs["scene_obs"][2] == pytest.approx(0.02, abs=1e-9) and obs["scene_obs"][0] == pytest.approx(0, abs=1e-9)
    far = scene_obs.copy()
    far[2] = 0.03
    with pytest.raises(ValueError, match="base__button"):
        state_env.reset(robot_obs, far)


def _move(environment, target, steps, gripper=-1):
    """Absolute actions along the straight line from the commanded target, arriving half-way through."""
    orientation, start = environment.robot.target_orn.copy(), environment.robot.target_pos.copy()
    for k in range(1, steps + 1):
        obs, _, _, info = environment.step((start + (np.asarray(target) - start) * min(1.0, k / (steps / 2)),
                                            orientation, gripper))
    return obs, info


def test_the_robot_can_lift_a_block_and_pull_the_drawer(state_env, chains):
    from envs.tasks import TaskOracle

    oracle = TaskOracle()
    state = dict(chains[0][0], slider="right", drawer="closed")  # blue on the table
    state_env.reset(*initial_condition_to_obs(state))
    start = state_env.get_info()
    block = state_env.scene.block_pose("block_blue")[0]
    _move(state_env, block + [0, 0, 0.08], 40, gripper=1)
    _move(state_env, block, 30, gripper=1)
    _move(state_env, block, 15)
    _, info = _move(state_env, block + [0, 0, 0.12], 30)
    assert oracle.get_task_info(start, info) == {"lift_blue_block_table"}
    state_env.reset(*initial_condition_to_obs(state))
    start = state_env.get_info()
    handle, direction = state_env.scene.handle_position("base__drawer"), state_env.scene.joint_direction("base__drawer")
    _move(state_env, handle + [0, 0, 0.08], 40, gripper=1)
    _move(state_env, handle, 30, gripper=1)
    _move(state_env, handle, 12)
    _, info = _move(state_env, handle + 0.2 * direction, 60)
    assert oracle.get_task_info(start, info) == {"open_drawer"}


def test_button_toggles_the_led_on_each_press_and_the_switch_holds_the_bulb(state_env, chains):
    state = dict(chains[0][0], led=0, lightbulb=0, slider="right", drawer="closed")
    state_env.reset(*initial_condition_to_obs(state))
    top = state_env.scene.handle_position("base__button")
    leds = []
    for _ in range(2):  # press (hold it down), release, twice
        _move(state_env, top + [0, 0, 0.06], 30)
        obs, info = _move(state_env, top + [0, 0, -0.025], 12)
        assert obs["scene_obs"][2] > 0.015
        leds.append(info["scene_info"]["lights"]["led"]["logical_state"])
        obs, info = _move(state_env, top + [0, 0, 0.06], 15)
        assert obs["scene_obs"][2] < 0.005  # the spring pushed it back
        leds.append(info["scene_info"]["lights"]["led"]["logical_state"])
    assert leds == [1, 1, 0, 0] and obs["scene_obs"][5] == 0
    tip, up = state_env.scene.handle_position("base__switch"), state_env.scene.joint_direction("base__switch")
    _move(state_env, tip - 0.04 * up + [0, -0.05, 0.05], 30)
    _move(state_env, tip - 0.04 * up, 25)
    bulbs = []
    for k in range(8):
        obs, info = _move(state_env, tip + (-0.01 + 0.015 * k) * up, 4)
        bulbs.append((obs["scene_obs"][3] > 0.044, info["scene_info"]["lights"]["lightbulb"]["logical_state"]))
    assert all(int(above) == on for above, on in bulbs) and bulbs[-1] == (True, 1)
    obs, info = _move(state_env, obs["robot_obs"][:3] + [0, -0.1, 0.05], 20)
    assert obs["scene_obs"][3] > 0.044 and info["scene_info"]["lights"]["lightbulb"]["logical_state"] == 1
    state_env.scene.p.resetJointState(state_env.scene.table_uid, state_env.scene.joint_ids["base__switch"], 0.02)
    info = state_env.step(REST)[3]
    assert info["scene_info"]["lights"]["lightbulb"]["logical_state"] == 0  # level-triggered: below -> off


@pytest.mark.parametrize(("scene", "order"), [
    ("A", ["block_pink", "block_blue", "block_red"]), ("B", ["block_red", "block_blue", "block_pink"]),
    ("C", ["block_blue", "block_red", "block_pink"]), ("D", ["block_red", "block_blue", "block_pink"])])
def test_scene_obs_block_order_follows_each_scene(scene, order):
    with PlayTableEnv(scene, cameras=False) as environment:
        assert list(environment.scene.block_names) == order
        labels = environment.scene_obs_labels
        assert labels[6] == f"{order[0]}_x" and labels[23] == f"{order[2]}_rz"


def test_abc_to_d_is_a_visual_and_layout_shift(chains):
    robot_obs, scene_obs = initial_condition_to_obs(dict(chains[0][0], slider="right"))  # C's door travels 0.24 m
    images, buttons = {}, {}
    for scene in SCENES:
        with PlayTableEnv(scene) as environment:
            images[scene] = environment.reset(robot_obs, scene_obs)["rgb_obs"]["rgb_static"].astype(int)
            buttons[scene] = environment.scene.handle_position("base__button")[0]
    assert buttons == pytest.approx({"A": -0.28, "B": 0.28, "C": -0.12, "D": -0.12})
    for train in "ABC":
        assert np.abs(images[train] - images["D"]).mean() > 10

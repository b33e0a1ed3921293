"""CALVIN action -> safe Franka target math (envs/franka/geometry.py): pure numpy, no robot needed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from components.core.config import load_config
from envs.franka.geometry import (
    Pose,
    check_action,
    euler_to_matrix,
    matrix_to_euler,
    plan_step,
    rotation_angle,
    scale_rotation,
)

# The Franka "ready" TCP orientation: gripper pointing straight down (x forward, z down).
DOWN = euler_to_matrix(np.array([np.pi, 0.0, 0.0]))


@pytest.fixture(scope="module")
def cfg():
    base = load_config().robot.franka
    return replace(base, workspace_min=(0.2, -0.3, 0.1), workspace_max=(0.7, 0.3, 0.6),
                   max_step_translation=0.05, max_step_rotation=0.2)


def pose(xyz, rotation=DOWN) -> Pose:
    return Pose(np.asarray(xyz, dtype=float), rotation)


def act(*values, gripper=1.0) -> np.ndarray:
    return np.array([*values, *([0.0] * (6 - len(values))), gripper])


def test_euler_convention_is_pybullets_extrinsic_xyz():
    rng = np.random.default_rng(0)
    for _ in range(100):
        euler = rng.uniform([-np.pi, -np.pi / 2 + 0.01, -np.pi], [np.pi, np.pi / 2 - 0.01, np.pi])
        rotation = euler_to_matrix(euler)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(matrix_to_euler(rotation), euler, atol=1e-9)
    # yaw alone turns x into y; R = Rz(yaw) Ry(pitch) Rx(roll) (pybullet's getQuaternionFromEuler)
    np.testing.assert_allclose(euler_to_matrix(np.array([0, 0, np.pi / 2])) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    roll, pitch = 0.3, 0.2
    rx = np.array([[1, 0, 0], [0, np.cos(roll), -np.sin(roll)], [0, np.sin(roll), np.cos(roll)]])
    ry = np.array([[np.cos(pitch), 0, np.sin(pitch)], [0, 1, 0], [-np.sin(pitch), 0, np.cos(pitch)]])
    np.testing.assert_allclose(euler_to_matrix(np.array([roll, pitch, 0.0])), ry @ rx, atol=1e-12)


def test_translation_is_in_the_world_frame_whatever_the_gripper_orientation(cfg):
    """+z means up in the world even though the downward gripper's own z axis points down."""
    for rotation in (DOWN, euler_to_matrix(np.array([2.5, 0.3, 1.2]))):
        start = pose([0.4, 0.0, 0.4], rotation)
        plan = plan_step(cfg, start, start, act(0.5, -1.0, 1.0))
        np.testing.assert_allclose(plan.target.position - start.position, [0.01, -0.02, 0.02], atol=1e-12)
        np.testing.assert_allclose(plan.target.rotation, rotation, atol=1e-12)
        assert not (plan.clipped_action or plan.clipped_workspace or plan.clipped_step)


def test_rotation_adds_to_the_commanded_euler_angles(cfg):
    start = pose([0.4, 0.0, 0.4], euler_to_matrix(np.array([3.0, 0.1, 0.5])))
    plan = plan_step(cfg, start, start, act(0, 0, 0, 0.2, -0.4, 1.0))
    np.testing.assert_allclose(plan.target.euler, [3.01, 0.08, 0.55], atol=1e-12)


def test_actions_integrate_onto_the_commanded_target_not_the_measured_pose(cfg):
    """CALVIN's `use_target_pose`: a lagging robot does not shrink the commanded motion."""
    target, measured = pose([0.45, 0.0, 0.4]), pose([0.43, 0.0, 0.4])
    plan = plan_step(cfg, target, measured, act(1.0))
    np.testing.assert_allclose(plan.target.position, [0.47, 0.0, 0.4], atol=1e-12)


def test_targets_outside_the_workspace_are_clipped_to_the_box(cfg):
    edge = pose([0.69, 0.29, 0.11])
    plan = plan_step(cfg, edge, edge, act(1.0, 1.0, -1.0))
    np.testing.assert_allclose(plan.target.position, [0.7, 0.3, 0.1], atol=1e-12)
    assert plan.clipped_workspace


def test_a_step_never_moves_further_than_the_step_limits_from_the_measured_pose(cfg):
    tight = replace(cfg, max_step_translation=0.005, max_step_rotation=0.01)
    start = pose([0.4, 0.0, 0.4])
    plan = plan_step(tight, start, start, act(1.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    offset = plan.target.position - start.position
    assert np.linalg.norm(offset) == pytest.approx(0.005)
    np.testing.assert_allclose(offset / np.linalg.norm(offset), [2 ** -0.5, 2 ** -0.5, 0], atol=1e-12)
    assert rotation_angle(start.rotation.T @ plan.target.rotation) == pytest.approx(0.01)
    assert plan.clipped_step and not plan.clipped_workspace
    # a target that ran far ahead of a stuck robot is pulled back, so it cannot run away
    far = plan_step(tight, pose([0.6, 0.0, 0.4]), start, act(0.0))
    assert np.linalg.norm(far.target.position - start.position) == pytest.approx(0.005)


def test_the_commanded_target_never_advances_more_than_the_step_limit_even_if_the_arm_overshoots(cfg):
    tight = replace(cfg, max_step_translation=0.005)
    target = pose([0.4, 0.0, 0.4])
    ahead = pose([0.41, 0.0, 0.4])  # the measured arm ran 1 cm past its target
    plan = plan_step(tight, target, ahead, act(1.0))
    np.testing.assert_allclose(plan.target.position, [0.405, 0.0, 0.4], atol=1e-12)
    assert plan.clipped_step


def test_an_arm_pushed_outside_the_box_never_drags_the_target_out(cfg):
    target, outside = pose([0.7, 0.0, 0.4]), pose([0.75, 0.0, 0.4])  # pushed 5 cm past the x limit
    plan = plan_step(replace(cfg, max_step_translation=0.01), target, outside, act(1.0))
    assert plan.target.position[0] <= 0.7 and plan.clipped_workspace


def test_action_magnitudes_above_one_are_clipped_and_reported(cfg):
    start = pose([0.4, 0.0, 0.4])
    plan = plan_step(cfg, start, start, act(3.0, -2.0))
    np.testing.assert_allclose(plan.target.position - start.position, [0.02, -0.02, 0.0], atol=1e-12)
    assert plan.clipped_action


@pytest.mark.parametrize("bad, message", [
    (np.zeros(6), "shape"), (act(np.nan), "not finite"), (act(0.0, gripper=0.3), "gripper"),
    (act(0.0, gripper=0.0), "gripper"), (act(np.inf), "not finite"),
])
def test_malformed_actions_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        check_action(bad)


def test_scale_rotation_follows_the_shortest_arc_including_half_turns():
    rng = np.random.default_rng(1)
    for _ in range(50):
        rotation = euler_to_matrix(rng.uniform(-np.pi, np.pi, 3))
        half = scale_rotation(rotation, 0.5)
        np.testing.assert_allclose(half @ half, rotation, atol=1e-9)
    flip = euler_to_matrix(np.array([np.pi, 0.0, 0.0]))  # exactly pi: the generic axis formula divides by 0
    quarter = scale_rotation(flip, 0.5)
    np.testing.assert_allclose(quarter @ quarter, flip, atol=1e-9)
    assert rotation_angle(quarter) == pytest.approx(np.pi / 2)

"""CALVIN action -> safe Franka target math (envs/franka/geometry.py): pure numpy, no robot needed.

The property tests draw thousands of random poses, targets and actions (fixed seeds) and check the
safety invariants on every one: the step from the measured pose never exceeds the step limits, a pose
inside the workspace box and tilt bound is never commanded out of them, and a pose outside is brought
back in bounded steps.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from components.core.config import load_config
from envs.franka.geometry import (
    Pose,
    axis_angle,
    check_action,
    clip_tilt,
    euler_to_matrix,
    in_workspace,
    limit_rotation,
    matrix_to_euler,
    plan_step,
    rotation_angle,
    tilt,
)

# The Franka "ready" TCP orientation: gripper pointing straight down (x forward, z down). The home orientation.
DOWN = euler_to_matrix(np.array([np.pi, 0.0, 0.0]))
EPS = 1e-9


@pytest.fixture(scope="module")
def cfg():
    base = load_config().robot.franka
    return replace(base, workspace_min=(0.2, -0.3, 0.1), workspace_max=(0.7, 0.3, 0.6),
                   max_step_translation=0.05, max_step_rotation=0.2, max_tilt=1.0)


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
        plan = plan_step(cfg, start, start, act(0.5, -1.0, 1.0), DOWN)
        np.testing.assert_allclose(plan.target.position - start.position, [0.01, -0.02, 0.02], atol=1e-12)
        np.testing.assert_allclose(plan.target.rotation, rotation, atol=1e-12)
        assert not (plan.clipped_action or plan.clipped_workspace or plan.clipped_tilt or plan.clipped_step)


def test_rotation_adds_to_the_commanded_euler_angles(cfg):
    start = pose([0.4, 0.0, 0.4], euler_to_matrix(np.array([3.0, 0.1, 0.5])))
    plan = plan_step(cfg, start, start, act(0, 0, 0, 0.2, -0.4, 1.0), DOWN)
    np.testing.assert_allclose(plan.target.euler, [3.01, 0.08, 0.55], atol=1e-12)


def test_actions_integrate_onto_the_commanded_target_not_the_measured_pose(cfg):
    """CALVIN's `use_target_pose`: a lagging robot does not shrink the commanded motion."""
    target, measured = pose([0.45, 0.0, 0.4]), pose([0.43, 0.0, 0.4])
    plan = plan_step(cfg, target, measured, act(1.0), DOWN)
    np.testing.assert_allclose(plan.target.position, [0.47, 0.0, 0.4], atol=1e-12)


def test_targets_outside_the_workspace_are_clipped_to_the_box(cfg):
    edge = pose([0.69, 0.29, 0.11])
    plan = plan_step(cfg, edge, edge, act(1.0, 1.0, -1.0), DOWN)
    np.testing.assert_allclose(plan.target.position, [0.7, 0.3, 0.1], atol=1e-12)
    assert plan.clipped_workspace


def test_a_step_never_moves_further_than_the_step_limits_from_the_measured_pose(cfg):
    tight = replace(cfg, max_step_translation=0.005, max_step_rotation=0.01)
    start = pose([0.4, 0.0, 0.4])
    plan = plan_step(tight, start, start, act(1.0, 1.0, 0.0, 0.0, 0.0, 1.0), DOWN)
    offset = plan.target.position - start.position
    assert np.linalg.norm(offset) == pytest.approx(0.005)
    np.testing.assert_allclose(offset / np.linalg.norm(offset), [2 ** -0.5, 2 ** -0.5, 0], atol=1e-12)
    assert rotation_angle(start.rotation.T @ plan.target.rotation) == pytest.approx(0.01)
    assert plan.clipped_step and not plan.clipped_workspace
    # a target that ran far ahead of a stuck robot is pulled back, so it cannot run away
    far = plan_step(tight, pose([0.6, 0.0, 0.4]), start, act(0.0), DOWN)
    assert np.linalg.norm(far.target.position - start.position) == pytest.approx(0.005)


def test_the_commanded_target_never_advances_more_than_the_step_limit_even_if_the_arm_overshoots(cfg):
    tight = replace(cfg, max_step_translation=0.005)
    target = pose([0.4, 0.0, 0.4])
    ahead = pose([0.41, 0.0, 0.4])  # the measured arm ran 1 cm past its target
    plan = plan_step(tight, target, ahead, act(1.0), DOWN)
    np.testing.assert_allclose(plan.target.position, [0.405, 0.0, 0.4], atol=1e-12)
    assert plan.clipped_step


def test_an_arm_outside_the_box_is_brought_back_one_step_at_a_time_not_in_one_jump(cfg):
    """The probe's case: clipping to the box after the step limit asked an arm 8 cm out to jump 8 cm."""
    limit = 0.04
    target, outside = pose([0.7, 0.0, 0.4]), pose([0.78, 0.0, 0.4])  # pushed 8 cm past the x limit
    plan = plan_step(replace(cfg, max_step_translation=limit), target, outside, act(1.0), DOWN)
    np.testing.assert_allclose(plan.target.position, [0.74, 0.0, 0.4], atol=1e-12)  # one step toward the box
    assert plan.clipped_workspace and plan.clipped_step


def test_action_magnitudes_above_one_are_clipped_and_reported(cfg):
    start = pose([0.4, 0.0, 0.4])
    plan = plan_step(cfg, start, start, act(3.0, -2.0), DOWN)
    np.testing.assert_allclose(plan.target.position - start.position, [0.02, -0.02, 0.0], atol=1e-12)
    assert plan.clipped_action


@pytest.mark.parametrize("bad, message", [
    (np.zeros(6), "shape"), (act(np.nan), "not finite"), (act(0.0, gripper=0.3), "gripper"),
    (act(0.0, gripper=0.0), "gripper"), (act(np.inf), "not finite"),
])
def test_malformed_actions_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        check_action(bad)


def random_rotation(rng) -> np.ndarray:
    """A uniformly random rotation (3, 3) (a normalised Gaussian quaternion)."""
    w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def tilted(rng, angle: float) -> np.ndarray:
    """DOWN tilted by `angle` rad about a random horizontal axis, then turned by a random yaw."""
    heading = rng.uniform(-np.pi, np.pi)
    axis = np.array([np.cos(heading), np.sin(heading), 0.0])
    return axis_angle(axis, angle) @ DOWN @ axis_angle(np.array([0.0, 0.0, 1.0]), rng.uniform(-np.pi, np.pi))


def random_limits(cfg, rng):
    return replace(cfg, max_step_translation=rng.uniform(0.001, 0.1), max_step_rotation=rng.uniform(0.01, 0.5),
                   max_tilt=rng.uniform(0.1, np.pi / 2))


def random_action(rng) -> np.ndarray:
    return np.r_[rng.uniform(-1.5, 1.5, 6), rng.choice([-1.0, 1.0])]


def box_distance(cfg, position) -> float:
    return float(np.linalg.norm(position - np.clip(position, cfg.workspace_min, cfg.workspace_max)))


def test_no_step_ever_exceeds_the_step_limits_from_the_measured_pose(cfg):
    """Whatever the previous target, the measured pose (inside or outside the bounds) and the action."""
    rng = np.random.default_rng(2)
    for _ in range(2000):
        limits = random_limits(cfg, rng)
        current = Pose(rng.uniform([-0.2, -0.7, -0.3], [1.1, 0.7, 1.0]), random_rotation(rng))
        target = Pose(current.position + rng.normal(0, 0.1, 3), random_rotation(rng))
        plan = plan_step(limits, target, current, random_action(rng), DOWN)
        assert np.linalg.norm(plan.target.position - current.position) <= limits.max_step_translation + EPS
        assert rotation_angle(current.rotation.T @ plan.target.rotation) <= limits.max_step_rotation + EPS
        np.testing.assert_allclose(plan.target.rotation @ plan.target.rotation.T, np.eye(3), atol=1e-9)


def test_a_measured_pose_inside_the_bounds_is_never_commanded_out_of_them(cfg):
    rng = np.random.default_rng(3)
    for _ in range(2000):
        limits = random_limits(cfg, rng)
        current = Pose(rng.uniform(limits.workspace_min, limits.workspace_max),
                       tilted(rng, rng.uniform(0, limits.max_tilt)))
        # a previous target anywhere: one left outside while the arm was pushed out must not pull this one out
        target = Pose(current.position + rng.normal(0, 0.2, 3), random_rotation(rng))
        plan = plan_step(limits, target, current, random_action(rng), DOWN)
        assert in_workspace(limits, plan.target.position, EPS)
        assert tilt(plan.target.rotation, DOWN) <= limits.max_tilt + EPS


def test_a_pose_outside_the_box_is_approached_in_bounded_steps_and_reaches_it(cfg):
    rng = np.random.default_rng(4)
    for _ in range(200):
        limits = random_limits(cfg, rng)
        start = rng.uniform([-0.3, -0.8, -0.4], [1.2, 0.8, 1.1])
        current = target = Pose(start, tilted(rng, rng.uniform(0, limits.max_tilt)))
        outward = np.r_[np.sign(start - np.mean([limits.workspace_min, limits.workspace_max], axis=0)), 0, 0, 0, 1]
        needed = int(np.ceil(box_distance(limits, start) / limits.max_step_translation))
        for step in range(needed + 1):
            # the policy pushes outward the whole time; the arm lags: it covers only half the step on odd steps
            plan = plan_step(limits, target, current, outward, DOWN)
            assert np.linalg.norm(plan.target.position - current.position) <= limits.max_step_translation + EPS
            assert box_distance(limits, plan.target.position) <= box_distance(limits, current.position) + EPS
            moved = plan.target.position if step % 2 == 0 else (current.position + plan.target.position) / 2
            current, target = Pose(moved, plan.target.rotation), plan.target
        for _ in range(needed + 1):  # a tracking arm: at most one step per step
            plan = plan_step(limits, target, current, outward, DOWN)
            current = target = plan.target
        assert in_workspace(limits, current.position, EPS)


def test_a_pose_tilted_past_the_bound_is_swung_back_in_bounded_steps_and_reaches_it(cfg):
    rng = np.random.default_rng(5)
    for _ in range(100):
        limits = replace(random_limits(cfg, rng), max_step_rotation=rng.uniform(0.05, 0.5))
        current = target = pose([0.4, 0.0, 0.4], tilted(rng, rng.uniform(limits.max_tilt, np.pi)))
        start = tilt(current.rotation, DOWN)
        for _ in range(int(np.ceil((start - limits.max_tilt) / limits.max_step_rotation))):
            plan = plan_step(limits, target, current, random_action(rng), DOWN)
            assert rotation_angle(current.rotation.T @ plan.target.rotation) <= limits.max_step_rotation + EPS
            assert tilt(plan.target.rotation, DOWN) <= tilt(current.rotation, DOWN) + EPS  # never tips further
            current = target = plan.target
        for _ in range(int(np.ceil((start - limits.max_tilt) / limits.max_step_rotation))):  # no action: straight back
            current = target = plan_step(limits, target, current, act(0.0), DOWN).target
        assert tilt(current.rotation, DOWN) <= limits.max_tilt + EPS


def test_the_tilt_is_clipped_and_the_turn_about_the_approach_axis_is_free(cfg):
    start = pose([0.4, 0.0, 0.4])
    leaning = replace(cfg, max_tilt=0.1, max_step_rotation=0.5)
    plan = plan_step(leaning, start, start, act(0, 0, 0, 1.0, 1.0), DOWN)  # asks for roll and pitch, 0.07 rad
    assert not plan.clipped_tilt
    for _ in range(5):
        plan = plan_step(leaning, plan.target, plan.target, act(0, 0, 0, 1.0, 1.0), DOWN)
    assert plan.clipped_tilt and tilt(plan.target.rotation, DOWN) == pytest.approx(0.1)
    # CALVIN's wrist turns: yaw about the vertical approach axis goes round freely, however far
    plan = plan_step(cfg, start, start, act(), DOWN)
    for _ in range(40):
        plan = plan_step(cfg, plan.target, plan.target, act(0, 0, 0, 0, 0, 1.0), DOWN)
        assert not (plan.clipped_tilt or plan.clipped_step)
    assert rotation_angle(DOWN.T @ plan.target.rotation) == pytest.approx(2.0)
    assert tilt(plan.target.rotation, DOWN) < 1e-9


def test_clip_tilt_keeps_the_turn_about_the_approach_axis():
    rng = np.random.default_rng(6)
    for _ in range(200):
        rotation, bound = random_rotation(rng), rng.uniform(0.05, np.pi / 2)
        clipped, changed = clip_tilt(rotation, DOWN, bound)
        assert changed == (tilt(rotation, DOWN) > bound)
        assert tilt(clipped, DOWN) <= bound + EPS
        swing = clipped @ rotation.T  # applied in the world frame, about an axis perpendicular to both z axes
        assert rotation_angle(swing) == pytest.approx(max(0.0, tilt(rotation, DOWN) - bound), abs=1e-9)


def test_limit_rotation_turns_at_most_the_limit_toward_the_target():
    rng = np.random.default_rng(7)
    for _ in range(500):
        start, end, limit = random_rotation(rng), random_rotation(rng), rng.uniform(0.01, 0.5)
        limited, changed = limit_rotation(start, end, limit)
        assert changed == (rotation_angle(start.T @ end) > limit)
        assert rotation_angle(start.T @ limited) <= limit + EPS
        if not changed:
            np.testing.assert_array_equal(limited, end)
        else:  # on the way: the approach axis lies on the great circle from start's to end's
            normal = np.cross(start[:, 2], end[:, 2])
            assert abs(np.dot(limited[:, 2], normal)) < 1e-9
    half_turn = euler_to_matrix(np.array([0.0, 0.0, np.pi]))  # exactly pi about the approach axis
    limited, _ = limit_rotation(np.eye(3), half_turn, 0.1)
    assert rotation_angle(limited) == pytest.approx(0.1)

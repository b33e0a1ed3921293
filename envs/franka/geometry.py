"""CALVIN relative actions -> safe absolute TCP targets: the pure math of the Franka environment.

CALVIN's control law (calvin_env `Robot.relative_to_absolute`, `use_target_pose: true`): a 7-D
action's xyz, times 0.02 m, is added to the previously commanded TCP *position in the world
(robot base) frame*, and its euler-xyz, times 0.05 rad, to the commanded *euler angles*
(pybullet's convention: R = Rz(yaw) Ry(pitch) Rx(roll)). franky's relative motions are in the
end-effector frame instead, so the environment integrates CALVIN-style here and sends franky
absolute targets. Then the safety limits apply, in this order:

1. bounds: the position is clipped to the workspace box, and the orientation is swung back until
   its tilt (the angle between the TCP's approach axis, its z axis, and that axis at the home pose)
   is at most `max_tilt`; the rotation about the approach axis is not bounded;
2. step limits: the target is pulled back to within `max_step_translation` / `max_step_rotation` of
   the previous target (the commanded speed is bounded) and then of the *measured* pose.

The step limit from the measured pose comes last and always holds: a lagging arm is never asked to
jump, whatever the bounds did. Both bounds are convex (a box; a cone of half-angle <= pi/2 around the
home approach axis) and a step moves along a straight line and a great circle of the approach axis
(`limit_rotation`), so a target stays inside the bounds whenever the measured pose is inside; an arm
pushed outside them is brought back in steps within the limits, never in one jump (one tipped past
90 degrees is first swung straight back). The result becomes the new commanded target, so it can
never run away from the robot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.franka.config import FrankaConfig


@dataclass(frozen=True)
class Pose:
    """A TCP pose in the robot base frame: position (3,) metres and rotation matrix (3, 3)."""

    position: np.ndarray
    rotation: np.ndarray

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Pose:
        """From a (4, 4) homogeneous transform (franky's `Affine.matrix`)."""
        matrix = np.asarray(matrix, dtype=np.float64)
        return cls(matrix[:3, 3].copy(), matrix[:3, :3].copy())

    @property
    def matrix(self) -> np.ndarray:
        """The (4, 4) homogeneous transform."""
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = self.rotation, self.position
        return out

    @property
    def euler(self) -> np.ndarray:
        """Euler xyz (3,) in CALVIN's (pybullet's) convention."""
        return matrix_to_euler(self.rotation)


@dataclass(frozen=True)
class StepPlan:
    """The checked target of one step and which safety limits changed it."""

    target: Pose
    action: np.ndarray
    clipped_action: bool
    clipped_workspace: bool
    clipped_tilt: bool
    clipped_step: bool


def euler_to_matrix(euler: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) of euler xyz (3,): R = Rz(yaw) @ Ry(pitch) @ Rx(roll), as pybullet."""
    (cr, cp, cy), (sr, sp, sy) = np.cos(euler), np.sin(euler)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def matrix_to_euler(rotation: np.ndarray) -> np.ndarray:
    """Euler xyz (3,) of a rotation matrix (3, 3); the inverse of `euler_to_matrix` (pitch in [-pi/2, pi/2])."""
    pitch = np.arcsin(np.clip(-rotation[2, 0], -1.0, 1.0))
    roll = np.arctan2(rotation[2, 1], rotation[2, 2])
    yaw = np.arctan2(rotation[1, 0], rotation[0, 0])
    return np.array([roll, pitch, yaw])


def rotation_angle(rotation: np.ndarray) -> float:
    """The angle (rad, in [0, pi]) of a rotation matrix (3, 3); atan2 keeps small angles exact (arccos does not)."""
    skew = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0], rotation[1, 0] - rotation[0, 1]])
    return float(np.arctan2(np.linalg.norm(skew) / 2.0, (np.trace(rotation) - 1.0) / 2.0))


def axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """The rotation (3, 3) by `angle` rad about the unit vector `axis` (3,) (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def vector_angle(u: np.ndarray, v: np.ndarray) -> float:
    """The angle (rad, in [0, pi]) between two vectors (3,); atan2 keeps small angles exact."""
    return float(np.arctan2(np.linalg.norm(np.cross(u, v)), np.dot(u, v)))


def tilt(rotation: np.ndarray, home: np.ndarray) -> float:
    """The angle (rad) between the approach (z) axes of two TCP orientations (3, 3): the tilt away from `home`."""
    return vector_angle(rotation[:, 2], home[:, 2])


def swing_axis(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The unit axis (3,) that turns direction `start` (3,) toward `end` (3,) along a great circle.

    Parallel or opposite directions have no unique one: any axis perpendicular to `start` serves.
    """
    cross = np.cross(start, end)
    norm = np.linalg.norm(cross)
    if norm > 1e-12:
        return cross / norm
    helper = np.eye(3)[int(np.argmin(np.abs(start)))]  # the basis vector least parallel to `start`
    cross = np.cross(start, helper)
    return cross / np.linalg.norm(cross)


def check_action(action: np.ndarray) -> tuple[np.ndarray, bool]:
    """Validate a CALVIN action (7,) and clip its pose part to [-1, 1].

    Returns:
        The clipped float64 action (7,) and whether clipping changed it.

    Raises:
        ValueError: wrong shape, a non-finite entry, or a gripper value other than exactly -1 or 1
            (CALVIN asserts the same; a policy must binarise its gripper output).
    """
    action = np.asarray(action, dtype=np.float64)
    if action.shape != (7,):
        raise ValueError(f"action: expected shape (7,), got {action.shape}")
    if not np.all(np.isfinite(action)):
        raise ValueError(f"action: not finite: {action.tolist()}")
    if action[6] not in (-1.0, 1.0):
        raise ValueError(f"action[6] (gripper): must be exactly -1 (close) or 1 (open), got {action[6]}")
    clipped = action.copy()
    clipped[:6] = np.clip(action[:6], -1.0, 1.0)
    return clipped, bool(np.any(clipped != action))


def plan_step(cfg: FrankaConfig, target: Pose, current: Pose, action: np.ndarray, home: np.ndarray) -> StepPlan:
    """The safe absolute target of one CALVIN action.

    Args:
        cfg: scaling and safety limits.
        target: the previously commanded TCP pose (CALVIN integrates actions onto it).
        current: the measured TCP pose.
        action: CALVIN relative action (7,): xyz, euler-xyz in [-1, 1], gripper +-1.
        home: the TCP rotation (3, 3) at `cfg.home_joints`, which `max_tilt` is measured from.

    Returns:
        A target within the step limits of `current` (always) and of `target`; inside the workspace box
        and the tilt bound whenever `current` is, otherwise closer to them than `current`.
    """
    action, clipped_action = check_action(action)
    wanted = Pose(target.position + action[:3] * cfg.action_scale_pos,
                  euler_to_matrix(target.euler + action[3:6] * cfg.action_scale_rot))
    bounded, boxed, upright = clip_to_bounds(cfg, wanted, home)
    limited, from_target = limit_step(cfg, target, bounded)  # bounds the commanded speed
    # a previous target left outside the bounds (the arm was out of them) could pull this one out again
    limited, boxed_again, upright_again = clip_to_bounds(cfg, limited, home)
    if tilt(current.rotation, home) > np.pi / 2:
        # tipped past 90 deg, a swing toward the target could tilt the arm further: swing it straight back first
        limited = Pose(limited.position, clip_tilt(current.rotation, home, cfg.max_tilt)[0])
    # last: whatever the bounds did, the arm is never asked to cover more than one step
    final, from_current = limit_step(cfg, current, limited)
    return StepPlan(final, action, clipped_action, boxed or boxed_again, upright or upright_again,
                    from_target or from_current)


def clip_to_bounds(cfg: FrankaConfig, pose: Pose, home: np.ndarray) -> tuple[Pose, bool, bool]:
    """`pose` with its position clipped to the workspace box and its tilt to `max_tilt`; whether each changed."""
    position = np.clip(pose.position, cfg.workspace_min, cfg.workspace_max)
    rotation, tilted = clip_tilt(pose.rotation, home, cfg.max_tilt)
    return Pose(position, rotation), bool(np.any(position != pose.position)), tilted


def clip_tilt(rotation: np.ndarray, home: np.ndarray, max_tilt: float) -> tuple[np.ndarray, bool]:
    """`rotation` (3, 3) swung, about an axis perpendicular to its approach axis, to tilt <= `max_tilt` from `home`.

    The rotation about the approach axis is kept. Returns the rotation and whether it had to change.
    """
    angle = tilt(rotation, home)
    if angle <= max_tilt:
        return rotation, False
    axis = swing_axis(rotation[:, 2], home[:, 2])
    return axis_angle(axis, angle - max_tilt) @ rotation, True


def limit_step(cfg: FrankaConfig, anchor: Pose, pose: Pose) -> tuple[Pose, bool]:
    """`pose` pulled toward `anchor` to within max_step_translation / max_step_rotation; True if it had to move."""
    offset = pose.position - anchor.position
    distance = float(np.linalg.norm(offset))
    position, moved = pose.position, False
    if distance > cfg.max_step_translation:
        position, moved = anchor.position + offset * (cfg.max_step_translation / distance), True
    rotation, turned = limit_rotation(anchor.rotation, pose.rotation, cfg.max_step_rotation)
    return Pose(position, rotation), moved or turned


def limit_rotation(start: np.ndarray, end: np.ndarray, limit: float) -> tuple[np.ndarray, bool]:
    """`end` (3, 3), or the orientation `limit` rad or less from `start` on the way to it; True if limited.

    The way is a swing and a twist, both scaled by the same fraction: the approach axis moves along the
    great circle toward its final direction and the TCP turns about it. A great-circle arc never leaves a
    cone of half-angle <= pi/2 that holds both ends, so the tilt bound survives the limit (the shortest
    rotation path does not guarantee that); from a tilt between the bound and pi/2 it never grows.
    """
    if rotation_angle(start.T @ end) <= limit:
        return end, False
    axis = swing_axis(start[:, 2], end[:, 2])
    swing = vector_angle(start[:, 2], end[:, 2])
    twisted = (axis_angle(axis, swing) @ start).T @ end  # a rotation about z: the twist left after the swing
    twist = float(np.arctan2(twisted[1, 0], twisted[0, 0]))
    # the swing and the twist each turn by their share; their sum bounds the angle of the composed rotation
    share = limit / (swing + abs(twist))
    return axis_angle(axis, swing * share) @ start @ axis_angle(np.array([0.0, 0.0, 1.0]), twist * share), True


def in_workspace(cfg: FrankaConfig, position: np.ndarray, tolerance: float = 0.0) -> bool:
    """Whether a TCP position (3,) lies inside the workspace box (grown by `tolerance` metres)."""
    lo = np.asarray(cfg.workspace_min) - tolerance
    hi = np.asarray(cfg.workspace_max) + tolerance
    return bool(np.all(position >= lo) and np.all(position <= hi))

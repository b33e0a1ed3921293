"""CALVIN relative actions -> safe absolute TCP targets: the pure math of the Franka environment.

CALVIN's control law (calvin_env `Robot.relative_to_absolute`, `use_target_pose: true`): a 7-D
action's xyz, times 0.02 m, is added to the previously commanded TCP *position in the world
(robot base) frame*, and its euler-xyz, times 0.05 rad, to the commanded *euler angles*
(pybullet's convention: R = Rz(yaw) Ry(pitch) Rx(roll)). franky's relative motions are in the
end-effector frame instead, so the environment integrates CALVIN-style here and sends franky
absolute targets. Then the safety limits apply, in this order: the target position is clipped to
the workspace box; pulled back to within `max_step_translation` / `max_step_rotation` of the
previous target (the commanded speed is bounded whatever the arm does) and then of the *measured*
pose (a lagging arm is never asked to jump); and clipped to the box again, which has the last word.
The result becomes the new commanded target, so it can never run away from the robot.
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


def scale_rotation(rotation: np.ndarray, fraction: float) -> np.ndarray:
    """The rotation (3, 3) about the same axis by `fraction` of the angle (Rodrigues)."""
    angle = rotation_angle(rotation)
    if angle < 1e-12:
        return np.eye(3)
    if np.pi - angle < 1e-6:  # the skew part vanishes at pi, where (R + I) / 2 = a a^T (either sign of a)
        outer = (rotation + np.eye(3)) / 2.0
        k = int(np.argmax(np.diag(outer)))
        axis = outer[:, k] / np.sqrt(outer[k, k])
    else:
        axis = np.array([rotation[2, 1] - rotation[1, 2], rotation[0, 2] - rotation[2, 0],
                         rotation[1, 0] - rotation[0, 1]]) / (2.0 * np.sin(angle))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    theta = angle * fraction
    return np.eye(3) + np.sin(theta) * k + (1.0 - np.cos(theta)) * (k @ k)


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


def plan_step(cfg: FrankaConfig, target: Pose, current: Pose, action: np.ndarray) -> StepPlan:
    """The safe absolute target of one CALVIN action.

    Args:
        cfg: scaling and safety limits.
        target: the previously commanded TCP pose (CALVIN integrates actions onto it).
        current: the measured TCP pose.
        action: CALVIN relative action (7,): xyz, euler-xyz in [-1, 1], gripper +-1.
    """
    action, clipped_action = check_action(action)
    position = target.position + action[:3] * cfg.action_scale_pos
    rotation = euler_to_matrix(target.euler + action[3:6] * cfg.action_scale_rot)
    boxed = np.clip(position, cfg.workspace_min, cfg.workspace_max)
    # toward the last target: commanded speed <= limit * control_hz; toward the measured pose: a lagging arm is
    # never asked to jump
    limited, from_target = limit_step(cfg, target, Pose(boxed, rotation))
    limited, from_current = limit_step(cfg, current, limited)
    # an arm pushed outside the box pulls the target with it: the box has the last word
    final = np.clip(limited.position, cfg.workspace_min, cfg.workspace_max)
    clipped_workspace = bool(np.any(boxed != position) or np.any(final != limited.position))
    return StepPlan(Pose(final, limited.rotation), action, clipped_action, clipped_workspace,
                    from_target or from_current)


def limit_step(cfg: FrankaConfig, anchor: Pose, pose: Pose) -> tuple[Pose, bool]:
    """`pose` pulled toward `anchor` to within max_step_translation / max_step_rotation; True if it had to move."""
    offset = pose.position - anchor.position
    distance = float(np.linalg.norm(offset))
    position, clipped = pose.position, False
    if distance > cfg.max_step_translation:
        position, clipped = anchor.position + offset * (cfg.max_step_translation / distance), True
    relative = anchor.rotation.T @ pose.rotation
    angle, rotation = rotation_angle(relative), pose.rotation
    if angle > cfg.max_step_rotation:
        rotation, clipped = anchor.rotation @ scale_rotation(relative, cfg.max_step_rotation / angle), True
    return Pose(position, rotation), clipped


def in_workspace(cfg: FrankaConfig, position: np.ndarray, tolerance: float = 0.0) -> bool:
    """Whether a TCP position (3,) lies inside the workspace box (grown by `tolerance` metres)."""
    lo = np.asarray(cfg.workspace_min) - tolerance
    hi = np.asarray(cfg.workspace_max) + tolerance
    return bool(np.all(position >= lo) and np.all(position <= hi))

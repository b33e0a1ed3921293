"""Waypoint motion for the scripted experts: TCP targets in, CALVIN 7-D relative actions out.

An expert plan is a generator that yields one relative action (7,) per control step. `Motion`
builds those actions from the robot's *commanded* TCP target (the pose CALVIN's control law adds
relative actions to), so a straight-line move of the target is exact: each step moves the target
by at most `speed` metres and each euler angle by `turn` radians toward the waypoint, and the move
ends once the target is there and the real TCP has caught up within a tolerance (or a settle budget
ran out, e.g. when a finger presses on something). Orientations are CALVIN's unwrapped euler xyz
targets; the gripper points down with roll +-pi (whichever is nearer the current target, never a
2 pi spin).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from envs.playtable.robot import MAX_REL_ORN, MAX_REL_POS

Action = np.ndarray
Plan = Iterator[Action]
OPEN, CLOSE = 1.0, -1.0
NEUTRAL_YAW = 1.5  # rad, the TCP yaw of CALVIN's evaluation pose (fingers close along world x)
YAW_LIMITS = (-0.9, 4.5)  # rad, TCP yaws the wrist reaches (joint 7 within ~0.4 rad of its limits)
CORRECTION_GAIN = 0.15  # per step: share of the TCP's position error added to the commanded target
MAX_CORRECTION = 0.02  # m per axis, bound of that correction (contact forces stay moderate)
MAX_STEP = 0.02  # m, a full relative action (the commanded path itself moves at most `speed`)


@dataclass(frozen=True)
class Speeds:
    """Per-step motion budgets (commanded target), metres and radians per 30 Hz step."""

    free: float = 0.019  # transit through free space
    approach: float = 0.01  # last centimetres to a grasp or contact
    push: float = 0.009  # pushing an object or a joint
    turn: float = 0.05  # wrist rotation, per euler angle (MAX_REL_ORN: a full relative action)


SPEEDS = Speeds()


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) rotation by `angle` about the unit `axis` (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def tilt_matrix(tilt: tuple[float, float]) -> np.ndarray:
    """(3, 3) rotation that swings the down axis (0, 0, -1) toward the horizontal `tilt` by its length (rad)."""
    angle = float(np.hypot(*tilt))
    if angle < 1e-9:
        return np.eye(3)
    # Turning (0, 0, -1) about k = (t_y, -t_x, 0) swings it toward t.
    return _rotation(np.array([tilt[1], -tilt[0], 0.0]) / angle, angle)


def down_matrix(yaw: float, tilt: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """(3, 3) TCP orientation: pointing down (roll pi), turned by `yaw` about z, leaning along `tilt`."""
    base = _rotation(np.array([0.0, 0.0, 1.0]), yaw) @ _rotation(np.array([1.0, 0.0, 0.0]), np.pi)
    return tilt_matrix(tilt) @ base


def matrix_to_euler(m: np.ndarray) -> np.ndarray:
    """Extrinsic x-y-z euler angles (pybullet's convention) of a rotation matrix (3, 3)."""
    return np.array([np.arctan2(m[2, 1], m[2, 2]), np.arcsin(-np.clip(m[2, 0], -1, 1)), np.arctan2(m[1, 0], m[0, 0])])


def euler_to_matrix(euler: np.ndarray) -> np.ndarray:
    """(3, 3) rotation of extrinsic x-y-z euler angles (pybullet's convention)."""
    a, b, c = euler
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def nearest_euler(m: np.ndarray, reference: np.ndarray, yaw: float) -> np.ndarray:
    """The euler triple of rotation `m` whose yaw is nearest `yaw` and roll/pitch nearest `reference`.

    The yaw decides which way the wrist turns (a plan picks it within the wrist's range); roll and
    pitch follow the commanded target's branch, so the target never spins by 2 pi.
    """
    a, b, c = matrix_to_euler(m)
    shifts = 2 * np.pi * np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1])).reshape(3, -1).T
    candidates = np.concatenate([np.array([a, b, c]) + shifts, np.array([a + np.pi, np.pi - b, c + np.pi]) + shifts])
    cost = 10 * np.abs(candidates[:, 2] - yaw) + np.linalg.norm(candidates[:, :2] - reference[:2], axis=1)
    return candidates[np.argmin(cost)]


class Motion:
    """Action generators for one robot: moves, gripper waits, holds.

    Args:
        robot: an object with `target_pos` (3,), `target_orn` (3,) -- the commanded TCP pose -- and
            `tcp_pose()` -> (position (3,), quaternion): PlayTable's `PandaRobot`.
    """

    def __init__(self, robot: object) -> None:
        self.robot = robot
        self.gripper = OPEN
        # The commanded target minus the nominal path point: the integral of the TCP's position error.
        self.correction = np.zeros(3)

    @property
    def target(self) -> tuple[np.ndarray, np.ndarray]:
        """The commanded TCP position (3,) and euler xyz (3,) (copies)."""
        return np.array(self.robot.target_pos, dtype=float), np.array(self.robot.target_orn, dtype=float)

    def tcp(self) -> np.ndarray:
        """The real TCP position (3,)."""
        return np.asarray(self.robot.tcp_pose()[0], dtype=float)

    def down(self, yaw: float, tilt: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """Euler target of a gripper pointing down with TCP yaw `yaw`, tilted by `tilt`.

        Args:
            yaw: rotation of the fingers about world z (rad); NEUTRAL_YAW closes them along world x.
            tilt: horizontal vector (x, y) whose direction is where the fingertips lean and whose
                length is the lean angle (rad); it moves the wrist back and extends the reach.

        Returns:
            (3,) euler xyz on the branch nearest the commanded target (no 2 pi spins).
        """
        return nearest_euler(down_matrix(yaw, tilt), self.target[1], yaw)

    def yaw_and_lean(self) -> tuple[float, np.ndarray]:
        """The (yaw, tilt) with which `down` gives the commanded orientation (yaw unwrapped near the target's).

        A held block keeps its pose in the hand: carrying it level means keeping this tilt, turned
        with the wrist.
        """
        rotation = euler_to_matrix(self.target[1])
        pointing = rotation[:, 2]
        sideways = float(np.hypot(pointing[0], pointing[1]))
        angle = float(np.arctan2(sideways, -pointing[2]))
        lean = pointing[:2] / sideways * angle if sideways > 1e-9 else np.zeros(2)
        untilted = tilt_matrix(tuple(lean)).T @ rotation @ _rotation(np.array([1.0, 0.0, 0.0]), np.pi).T
        yaw = float(np.arctan2(untilted[1, 0], untilted[0, 0]))
        yaw += 2 * np.pi * np.round((self.target[1][2] - yaw) / (2 * np.pi))
        return yaw, lean

    def action(self, position: np.ndarray, orientation: np.ndarray, gripper: float, speed: float,
               turn: float = SPEEDS.turn) -> Action:
        """One relative action moving the commanded target toward the pose, within the step budgets."""
        target_pos, target_orn = self.target
        delta = np.asarray(position, dtype=float) - target_pos
        norm = np.linalg.norm(delta)
        if norm > speed:
            delta *= speed / norm
        rotation = np.asarray(orientation, dtype=float) - target_orn
        angle = np.abs(rotation).max()  # per euler angle: each stays within one relative action (MAX_REL_ORN)
        if angle > turn:
            rotation *= turn / angle
        self.gripper = gripper
        return np.concatenate([delta / MAX_REL_POS, rotation / MAX_REL_ORN, [gripper]])

    def move(self, position: np.ndarray, orientation: np.ndarray, gripper: float | None = None, *,
             speed: float = SPEEDS.free, tol: float = 0.004, settle: int = 15) -> Plan:
        """Move the target in a straight line to the pose, then wait for the TCP (at most `settle` steps).

        The commanded path is corrected by the TCP's steady offset from it (an integral term on the
        position error, bounded by `MAX_CORRECTION`; while the path moves only across it, since the TCP
        trails along it): the IK lands millimetres to centimetres off at the edge of the workspace
        or in an unusual arm posture, which matters at a handle.

        Args:
            position: TCP goal (3,), world metres.
            orientation: euler xyz goal (3,), on the target's unwrapped branch (see `down`).
            gripper: OPEN/CLOSE during the move; None keeps the last command.
            speed: metres per step of the commanded target.
            tol: the move ends when the real TCP is this close (metres) ...
            settle: ... or this many steps after the path arrived (contact can hold the TCP back).
        """
        gripper = self.gripper if gripper is None else gripper
        position, orientation = np.asarray(position, dtype=float), np.asarray(orientation, dtype=float)
        nominal = self.target[0] - self.correction
        waited = 0
        while True:
            delta = position - nominal
            norm = np.linalg.norm(delta)
            nominal = position.copy() if norm <= speed else nominal + delta * speed / norm
            arrived = norm <= speed and np.allclose(self.target[1], orientation, atol=1e-9)
            if arrived:
                if np.linalg.norm(self.tcp() - position) < tol or waited >= settle:
                    return
                waited += 1
            error = nominal - self.tcp()
            if not arrived:  # moving: the TCP trails along the path; correct only across it
                along = delta / max(norm, 1e-9)
                error -= along * (error @ along)
            self.correction = np.clip(self.correction + CORRECTION_GAIN * error, -MAX_CORRECTION, MAX_CORRECTION)
            yield self.action(nominal + self.correction, orientation, gripper, MAX_STEP)

    def grip(self, gripper: float, steps: int = 12) -> Plan:
        """Hold the pose while the fingers close (CLOSE) or open (OPEN) for `steps` control steps."""
        position, orientation = self.target
        for _ in range(steps):
            yield self.action(position, orientation, gripper, 0.0)

    def hold(self) -> Plan:
        """Keep the commanded pose and gripper forever (the end of every plan)."""
        position, orientation = self.target
        while True:
            yield self.action(position, orientation, self.gripper, 0.0)

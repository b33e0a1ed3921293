"""The Franka Panda with CALVIN's control law (calvin_env `robot/robot.py` and `conf/robot/panda.yaml`).

The arm is `pybullet_data/franka_panda/panda.urdf` (whose meshes are CALVIN's) with CALVIN's longer
fingers and two links appended as in CALVIN: `gripper_cam` (link 12) on the hand and the tool
centre point `tcp` (link 13, 0.14 m from the hand); at CALVIN's joint pose our TCP pose is CALVIN's.
See `assets.py` for the fingers and the low-poly visuals.

Control law, as CALVIN: a 7-D relative action is scaled by 0.02 m and 0.05 rad and added to the
previously *commanded* target pose (euler angles added component-wise, no wrapping); an absolute
action is `(position(3), euler(3) or quaternion(4), gripper)`. The target goes through pybullet's
null-space IK on the TCP (limits +-7, rest pose = initial joints), is clipped to the Panda's limits
and sent as position targets (force 200 N, max velocity 2 rad/s); the gripper closes (-1) with
200 N and opens (1) with 2 N, fingers coupled by a gear constraint.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.playtable.assets import panda_urdf, write_asset

ARM_JOINTS = (0, 1, 2, 3, 4, 5, 6)
GRIPPER_JOINTS = (9, 10)
GRIPPER_LIMITS = (0.0, 0.04)  # m per finger
GRIPPER_CAM_LINK, TCP_LINK = 12, 13
MAX_JOINT_FORCE, GRIPPER_FORCE, MAX_VELOCITY = 200.0, 200.0, 2.0
MAX_REL_POS, MAX_REL_ORN = 0.02, 0.05  # m and rad per unit of relative action
# Real Panda joint limits (rad), the clip after IK.
JOINT_LOWER = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
JOINT_UPPER = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
ROBOT_OBS_LABELS = ("tcp_pos_x", "tcp_pos_y", "tcp_pos_z", "tcp_orn_x", "tcp_orn_y", "tcp_orn_z",
                    "gripper_opening_width", *(f"robot_joint_{i}" for i in ARM_JOINTS), "gripper_action")
def add_base_cylinder(client: Any, base_position: tuple) -> int:
    """CALVIN's white visual-only pedestal under the arm (yaw 0: 5 cm behind the base); returns its uid."""
    pos = np.array(base_position, dtype=float)
    pos[2] /= 2
    pos[0] -= 0.05
    cylinder = client.createVisualShape(client.GEOM_CYLINDER, rgbaColor=[1, 1, 1, 1], radius=0.13,
                                        length=base_position[2], visualFramePosition=pos.tolist())
    return client.createMultiBody(baseVisualShapeIndex=cylinder)


class PandaRobot:
    """CALVIN's `Robot` on one pybullet client: load, reset, act, observe."""

    def __init__(self, client: Any, base_position: tuple, base_orientation: tuple,
                 initial_joint_positions: tuple, *, low_poly: bool = True) -> None:
        """Bind to a `BulletClient`; CALVIN's scene YAML gives the base pose and initial joints."""
        self.p = client
        self.base_position = tuple(base_position)
        self.base_orientation = client.getQuaternionFromEuler(base_orientation)
        self.initial_joint_positions = np.asarray(initial_joint_positions, dtype=float)
        self.low_poly = low_poly
        self.uid = self.base_uid = -1
        self.target_pos = np.zeros(3)
        self.target_orn = np.zeros(3)
        self.gripper_action = 1
        self._rest_pose: list[float] = []

    def load(self) -> None:
        """Load the arm, the white base cylinder, and the finger gear constraint (CALVIN's `load`)."""
        p = self.p
        self.uid = self.load_arm(p)
        self.base_uid = add_base_cylinder(p, self.base_position)
        gear = p.createConstraint(self.uid, GRIPPER_JOINTS[0], self.uid, GRIPPER_JOINTS[1], jointType=p.JOINT_GEAR,
                                  jointAxis=[1, 0, 0], parentFramePosition=[0, 0, 0], childFramePosition=[0, 0, 0])
        p.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=50)
        self._rest_pose = [*self.initial_joint_positions, GRIPPER_LIMITS[1], GRIPPER_LIMITS[1]]
        self.reset()

    def load_arm(self, client: Any) -> int:
        """Load this arm's URDF (fixed base, same pose) into `client`; returns its uid."""
        path = write_asset(panda_urdf(self.low_poly), "panda")
        return client.loadURDF(str(path), self.base_position, self.base_orientation, useFixedBase=True)

    def reset(self, robot_obs: np.ndarray | None = None) -> None:
        """Set joints (and motor targets) from `robot_obs` (15,) or to the initial pose, gripper open.

        The commanded target becomes the current TCP pose. Unlike CALVIN, the last gripper action is
        also taken from `robot_obs[14]` (CALVIN keeps the stale one).
        """
        if robot_obs is None:
            joints, finger, self.gripper_action = self.initial_joint_positions, GRIPPER_LIMITS[1], 1
        else:
            joints, finger = robot_obs[7:14], robot_obs[6] / 2
            self.gripper_action = 1 if robot_obs[14] > 0 else -1
        p = self.p
        for joint, value in zip(ARM_JOINTS, joints, strict=True):
            p.resetJointState(self.uid, joint, value)
            p.setJointMotorControl2(self.uid, joint, p.POSITION_CONTROL, targetPosition=value,
                                    force=MAX_JOINT_FORCE, maxVelocity=MAX_VELOCITY)
        for joint in GRIPPER_JOINTS:
            p.resetJointState(self.uid, joint, finger)
            p.setJointMotorControl2(self.uid, joint, p.POSITION_CONTROL, targetPosition=finger,
                                    force=GRIPPER_FORCE, maxVelocity=1)
        self.target_pos, orn = self.tcp_pose()
        self.target_orn = np.array(p.getEulerFromQuaternion(orn))

    def tcp_pose(self) -> tuple[np.ndarray, tuple[float, ...]]:
        """TCP world position (3,) and quaternion (x, y, z, w)."""
        state = self.p.getLinkState(self.uid, TCP_LINK, computeForwardKinematics=True)
        return np.array(state[4]), state[5]

    def relative_to_absolute(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Integrate a relative action (7,) onto the commanded target (CALVIN's `use_target_pose`)."""
        self.target_pos = self.target_pos + action[:3] * MAX_REL_POS
        self.target_orn = self.target_orn + action[3:6] * MAX_REL_ORN
        return self.target_pos.copy(), self.target_orn.copy(), int(action[6])

    def apply_action(self, position: np.ndarray, orientation: np.ndarray, gripper: int) -> None:
        """Send the IK solution of an absolute TCP target and the gripper command to the motors."""
        p = self.p
        quat = p.getQuaternionFromEuler(orientation) if len(orientation) == 3 else tuple(orientation)
        n = len(self._rest_pose)
        solution = p.calculateInverseKinematics(self.uid, TCP_LINK, list(position), list(quat), lowerLimits=[-7] * n,
                                                upperLimits=[7] * n, jointRanges=[7] * n, restPoses=self._rest_pose)
        joints = np.clip(solution[: len(ARM_JOINTS)], JOINT_LOWER, JOINT_UPPER)
        for joint, value in zip(ARM_JOINTS, joints.tolist(), strict=True):  # the array call has no maxVelocity
            p.setJointMotorControl2(self.uid, joint, p.POSITION_CONTROL, targetPosition=value,
                                    force=MAX_JOINT_FORCE, maxVelocity=MAX_VELOCITY)
        self.gripper_action = gripper
        self._control_gripper(gripper)

    def _control_gripper(self, gripper: int) -> None:
        closed = gripper == -1
        target = GRIPPER_LIMITS[0] if closed else GRIPPER_LIMITS[1]
        force = GRIPPER_FORCE if closed else GRIPPER_FORCE / 100
        for joint in GRIPPER_JOINTS:
            self.p.setJointMotorControl2(self.uid, joint, self.p.POSITION_CONTROL, targetPosition=target,
                                         force=force, maxVelocity=1)

    def get_observation(self) -> tuple[np.ndarray, dict]:
        """CALVIN's `robot_obs` (15,) float64 (labels: `ROBOT_OBS_LABELS`) and `robot_info` dict."""
        p = self.p
        pos, quat = self.tcp_pose()
        orn = p.getEulerFromQuaternion(quat)
        fingers = p.getJointStates(self.uid, GRIPPER_JOINTS)
        width = fingers[0][0] + fingers[1][0]
        joints = [s[0] for s in p.getJointStates(self.uid, ARM_JOINTS)]
        robot_obs = np.array([*pos, *orn, width, *joints, self.gripper_action], dtype=np.float64)
        info = {"tcp_pos": tuple(pos), "tcp_orn": orn, "gripper_opening_width": width,
                "arm_joint_states": joints, "gripper_action": self.gripper_action, "uid": self.uid,
                "contacts": p.getContactPoints(bodyA=self.uid)}
        return robot_obs, info

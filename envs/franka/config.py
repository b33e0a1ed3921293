"""Configuration of the real Franka environment (the `robot.franka:` section of params.yaml).

Plain frozen dataclasses, no I/O: `components.core.config` builds them from YAML and checks types and
the `ge`/`gt`/`le`/`lt` bounds in each field's metadata; `validate()` raises
``ValueError("field: reason")`` for rules a single field cannot express.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

# Hard ceilings of the per-step limits (at 10 Hz: 1 m/s, 5 rad/s): a larger step limit is a typo, not a choice
MAX_STEP_TRANSLATION_CEILING_M = 0.1
MAX_STEP_ROTATION_CEILING_RAD = 0.5
# max_tilt beyond 90 degrees would make the tilt bound non-convex, and a step limit could then leave it
MAX_TILT_CEILING_RAD = math.pi / 2
# Franka Panda joint ranges q1..q7, radians (Franka's datasheet)
PANDA_JOINT_LIMITS_RAD = ((-2.8973, 2.8973), (-1.7628, 1.7628), (-2.8973, 2.8973), (-3.0718, -0.0698),
                          (-2.8973, 2.8973), (-0.0175, 3.7525), (-2.8973, 2.8973))


def _f(**bounds: float) -> object:
    return field(metadata=bounds)


@dataclass(frozen=True)
class CameraConfig:
    """One RealSense camera: live (selected by serial number) or played back from a .db3 recording."""

    # serial number of the camera, quoted ('817612070001': unquoted digits are a number; `python -m envs.franka.camera`
    # lists them); null = not set yet
    serial: str | None
    # .db3 recording played back instead of the live camera; null = live
    recording: str | None
    # colour stream width requested from the live camera, px (a recording plays at its recorded size)
    width: int = _f(ge=1)
    # colour stream height requested from the live camera, px (a recording plays at its recorded size)
    height: int = _f(ge=1)
    # stream rate, frames per second
    fps: int = _f(ge=1)
    # side of the square observation the policy receives, px (CALVIN: 200 static, 84 gripper)
    image_size: int = _f(ge=8)


@dataclass(frozen=True)
class FrankaConfig:
    """A Franka Panda/FR3 through franky, its safety limits, and its two RealSense cameras."""

    # FCI address of the robot (franky-sim prints its loopback address, e.g. 127.0.0.1)
    hostname: str
    # seconds to wait for the robot's FCI port before failing with a clear error
    connect_timeout_s: float = _f(gt=0.0)
    # require a PREEMPT_RT kernel (franky RealtimeConfig.Enforce); false for machines without one and franky-sim
    require_realtime: bool
    # control steps per second, Hz: one 7-D action is executed per step (match the rate of the robot data the policy was
    # tuned on)
    control_hz: float = _f(gt=0.0, le=100.0)
    # CALVIN's action scaling: metres per unit of action xyz (world frame), per step
    action_scale_pos: float = _f(gt=0.0)
    # CALVIN's action scaling: radians per unit of action euler-xyz, per step
    action_scale_rot: float = _f(gt=0.0)
    # velocity/acceleration/jerk of every motion as a fraction of the robot's limits (franky relative_dynamics_factor)
    dynamics_factor: float = _f(gt=0.0, le=1.0)
    # lower corner of the TCP workspace box in the robot base frame, metres, [x, y, z]; targets outside the box are
    # clipped to it
    workspace_min: tuple[float, ...]
    # upper corner of the TCP workspace box in the robot base frame, metres, [x, y, z]
    workspace_max: tuple[float, ...]
    # largest TCP translation one step may command, metres, measured from the current pose
    max_step_translation: float = _f(gt=0.0)
    # largest TCP rotation one step may command, radians, measured from the current pose
    max_step_rotation: float = _f(gt=0.0)
    # largest tilt of the TCP away from its orientation at home_joints, radians, at most pi/2: the angle between
    # the TCP's approach (z) axis and that axis at home; the turn about the approach axis is not bounded. Targets
    # tilted further are swung back to it, like positions are clipped to the workspace box
    max_tilt: float = _f(gt=0.0)
    # arm joint angles reset() moves to, radians (then the gripper opens)
    home_joints: tuple[float, ...]
    # gripper width commanded by action +1 (open), metres
    gripper_open_width: float = _f(gt=0.0, le=0.08)
    # gripper finger speed, m/s
    gripper_speed: float = _f(gt=0.0, le=0.2)
    # grasp force of action -1 (close), newtons
    gripper_force: float = _f(gt=0.0, le=70.0)
    # at reset only, after the operator confirms the move home: call franky's automatic error recovery once when
    # the robot is found in a reflex (never mid-episode, never in a dry run)
    auto_recover: bool
    # compute, check and log every target but never send a motion (cameras and robot state are still read)
    dry_run: bool
    # the fixed camera that gives the policy its static view (CALVIN's rgb_static)
    static_camera: CameraConfig
    # the wrist camera that gives the policy its gripper view (CALVIN's rgb_gripper)
    gripper_camera: CameraConfig

    def validate(self) -> None:
        """Cross-field checks and the safety limits: finite, ordered, under their ceilings, in the joint ranges."""
        for item in fields(self):
            value = getattr(self, item.name)
            numbers = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):  # a config built in code
                raise ValueError(f"{item.name}: must be finite, got {value}")
        for name in ("workspace_min", "workspace_max"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name}: expected [x, y, z], got {list(getattr(self, name))}")
        for axis, lo, hi in zip("xyz", self.workspace_min, self.workspace_max, strict=True):
            if lo >= hi:
                raise ValueError(f"workspace_max: {axis} must exceed workspace_min ({lo}), got {hi}")
        for name, ceiling in (("max_step_translation", MAX_STEP_TRANSLATION_CEILING_M),
                              ("max_step_rotation", MAX_STEP_ROTATION_CEILING_RAD), ("max_tilt", MAX_TILT_CEILING_RAD)):
            if not 0.0 < getattr(self, name) <= ceiling:
                raise ValueError(f"{name}: must be > 0 and <= {ceiling:.4g}, got {getattr(self, name)}")
        if len(self.home_joints) != 7:
            raise ValueError(f"home_joints: expected 7 joint angles, got {len(self.home_joints)}")
        for joint, (angle, (lo, hi)) in enumerate(zip(self.home_joints, PANDA_JOINT_LIMITS_RAD, strict=True), 1):
            if not lo <= angle <= hi:
                raise ValueError(f"home_joints: joint {joint} at {angle} rad is outside the Panda's range "
                                 f"[{lo}, {hi}] rad")

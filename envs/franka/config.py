"""Configuration of the real Franka environment (the `robot.franka:` section of params.yaml).

Plain frozen dataclasses, no I/O: `components.core.config` builds them from YAML and checks types and
the `ge`/`gt`/`le`/`lt` bounds in each field's metadata; `validate()` raises
``ValueError("field: reason")`` for rules a single field cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _f(**bounds: float) -> object:
    return field(metadata=bounds)


@dataclass(frozen=True)
class CameraConfig:
    """One RealSense camera: live (selected by serial number) or played back from a .db3 recording."""

    # serial number of the camera (`python -m envs.franka.camera` lists them); null = not set yet
    serial: str | None
    # .db3 recording played back instead of the live camera; null = live
    recording: str | None
    # colour stream size requested from the live camera, px (a recording plays at its recorded size)
    width: int = _f(ge=1)
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
    # control steps per second: one 7-D action is executed per step
    control_hz: float = _f(gt=0.0, le=100.0)
    # CALVIN's action scaling: metres per unit of action xyz (world frame), per step
    action_scale_pos: float = _f(gt=0.0)
    # CALVIN's action scaling: radians per unit of action euler-xyz, per step
    action_scale_rot: float = _f(gt=0.0)
    # velocity/acceleration/jerk of every motion as a fraction of the robot's limits (franky relative_dynamics_factor)
    dynamics_factor: float = _f(gt=0.0, le=1.0)
    # TCP workspace box in the robot base frame, metres, [x, y, z]; targets outside are clipped to it
    workspace_min: tuple[float, ...]
    workspace_max: tuple[float, ...]
    # largest TCP translation one step may command, metres, measured from the current pose
    max_step_translation: float = _f(gt=0.0)
    # largest TCP rotation one step may command, radians, measured from the current pose
    max_step_rotation: float = _f(gt=0.0)
    # arm joint angles reset() moves to, radians (then the gripper opens)
    home_joints: tuple[float, ...]
    # gripper width commanded by action +1 (open), metres
    gripper_open_width: float = _f(gt=0.0, le=0.08)
    # gripper finger speed, m/s
    gripper_speed: float = _f(gt=0.0, le=0.2)
    # grasp force of action -1 (close), newtons
    gripper_force: float = _f(gt=0.0, le=70.0)
    # call franky's automatic error recovery once when the robot is found in a reflex
    auto_recover: bool
    # compute, check and log every target but never send a motion (cameras and robot state are still read)
    dry_run: bool
    static_camera: CameraConfig
    gripper_camera: CameraConfig

    def validate(self) -> None:
        """Cross-field checks."""
        for name in ("workspace_min", "workspace_max"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name}: expected [x, y, z], got {list(getattr(self, name))}")
        for axis, lo, hi in zip("xyz", self.workspace_min, self.workspace_max, strict=True):
            if lo >= hi:
                raise ValueError(f"workspace_max: {axis} must exceed workspace_min ({lo}), got {hi}")
        if len(self.home_joints) != 7:
            raise ValueError(f"home_joints: expected 7 joint angles, got {len(self.home_joints)}")

"""The real Franka as a CALVIN environment: same 7-D relative actions and observation dict as the simulator.

    with FrankaEnv(cfg, confirm=operator.confirm) as env:
        obs = env.reset()                   # asks the operator, then moves home and opens the gripper
        env.arm("Scene ready?")             # step() refuses to move the robot until this is confirmed
        obs = env.get_obs()
        for _ in range(max_steps):
            obs, _, _, info = env.step(policy.step(obs, goal))

Observation (CALVIN's layout, envs/base.py):
    rgb_obs:   rgb_static (S, S, 3), rgb_gripper (G, G, 3) uint8 (centre-cropped, resized to `image_size`)
    depth_obs: {} (no depth is streamed; the policy uses colour only)
    robot_obs: (15,) float64, every entry measured on the robot: TCP position (3, base frame), TCP euler xyz
               (3, pybullet convention), gripper width (1, m), 7 joint angles, last gripper action (1, +-1)
There is no `scene_obs`: the real scene has no state vector, so code that needs one fails loudly.

Safety enforced here (see envs/franka/geometry.py for the target math): the limits are validated when
the environment opens; the workspace box, the tilt bound and the per-step limits apply to every target;
no motion without operator confirmation (`reset` asks before homing, `arm` before the policy moves the
robot); a reflex or error state ends the episode with RobotFaultError, and the robot then moves again
only after a new `reset` (operator-confirmed; franky's automatic error recovery runs there, after the
confirmation, and only with `auto_recover`) and a new `arm` - never by recovering mid-episode; any
exception inside `reset`/`step`, Ctrl-C included, and `close()` stop the robot; `dry_run` computes and
reports every target but never sends a motion.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from envs.base import Info, Observation
from envs.franka.camera import RealSenseCamera, square_resize
from envs.franka.config import FrankaConfig
from envs.franka.geometry import Pose, in_workspace, plan_step, tilt
from envs.franka.robot import ArmState, FrankaArm, RobotFaultError

HOME_TOLERANCE_M = 0.005
HOME_TOLERANCE_RAD = 0.02
SAME_TARGET_TOL = 1e-6  # m, and per rotation-matrix entry: an unchanged target's round-off (euler, ~2e-8 near roll pi)


class OperatorAbort(RuntimeError):
    """The operator declined a confirmation; nothing moved."""


class SafetyError(RuntimeError):
    """A motion would break a safety rule (not confirmed, or the robot starts outside the workspace or tilt bound)."""


class FrankaEnv:
    """A Franka Panda/FR3 behind CALVIN's `SimEnv` surface."""

    def __init__(self, cfg: FrankaConfig, *, confirm: Callable[[str], bool]) -> None:
        """Open both cameras, then connect to the robot; release everything if any part fails.

        Args:
            cfg: robot, safety and camera configuration.
            confirm: asks the operator a yes/no question; a motion happens only after it returns True.

        Raises:
            ValueError: a safety limit in `cfg` is invalid (`FrankaConfig.validate`), before anything opens.
        """
        try:  # load_config validates too; a config built in code (dataclasses.replace) is checked here
            cfg.validate()
        except ValueError as err:
            raise ValueError(f"robot.franka.{err}") from None
        self.cfg, self._confirm = cfg, confirm
        self.cameras: dict[str, RealSenseCamera] = {}
        self.robot: FrankaArm | None = None
        try:
            self.cameras["static"] = RealSenseCamera(cfg.static_camera, "robot.franka.static_camera")
            self.cameras["gripper"] = RealSenseCamera(cfg.gripper_camera, "robot.franka.gripper_camera")
            self.robot = FrankaArm(cfg)
        except BaseException:
            self.close()
            raise
        self._target: Pose | None = None
        self._home: np.ndarray | None = None  # TCP rotation (3, 3) at cfg.home_joints: max_tilt's reference
        self._gripper_action = 1.0
        self._armed = False
        self._deadline: float | None = None

    # ------------------------------------------------------------------ CALVIN surface

    def reset(self, robot_obs: np.ndarray | None = None, scene_obs: np.ndarray | None = None) -> Observation:
        """Move to the home joints (or `robot_obs[7:14]`), open the gripper, and return the observation.

        A robot found in a reflex is recovered here (franky's automatic error recovery), only with
        `auto_recover`, never in a dry run, and after the operator confirmed the move home: this is the one
        place that recovers.

        Raises:
            ValueError: `scene_obs` given (the operator resets the real scene) or a malformed `robot_obs`.
            OperatorAbort: the operator declined the motion (nothing moved).
            SafetyError: the TCP at home lies outside the workspace box or the tilt bound.
            RobotFaultError: the robot is in a fault that `auto_recover` is off for, or recovery failed.
        """
        if scene_obs is not None:
            raise ValueError("scene_obs: the real scene is reset by the operator, not from a state vector")
        joints = self._home_joints(robot_obs)
        self._target, self._armed, self._deadline = None, False, None
        with self._stop_on_error():
            # recovery changes the robot's state, so it follows a confirmation, which a dry run never asks for
            recover = self.cfg.auto_recover and not self.cfg.dry_run and self.robot.in_reflex()
            if not recover:
                self.robot.check_ready()  # a fault nobody may recover from here: stop before asking anything
            self._home = self.robot.pose_at(self.cfg.home_joints).rotation
            if not self.cfg.dry_run:
                self._check_bounds(self.robot.pose_at(joints), "the home joints")  # before anything moves
                note = " The robot is in a reflex: franky's automatic error recovery runs first." if recover else ""
                if not self._confirm(f"The robot will move to its home pose {np.round(joints, 3).tolist()} "
                                     f"and open the gripper.{note} Is the workspace clear?"):
                    raise OperatorAbort("the operator declined the move to the home pose")
            if recover:
                self.robot.recover()
            if not self.cfg.dry_run:
                self.robot.move_joints(joints)
                self.robot.command_gripper(open_=True)
                self.robot.wait_gripper()
            state = self.robot.read()
            self._check_bounds(state.pose, "the robot's pose")
            self._target, self._gripper_action = state.pose, 1.0
            return self._observe(state)

    def _check_bounds(self, tcp: Pose, where: str) -> None:
        if not in_workspace(self.cfg, tcp.position, HOME_TOLERANCE_M):
            raise SafetyError(f"robot.franka.workspace_min/max: the TCP at {where}, "
                              f"{np.round(tcp.position, 3).tolist()}, lies outside the workspace box; fix "
                              "home_joints (or the joints passed to reset) or the box")
        angle = tilt(tcp.rotation, self._home)
        if angle > self.cfg.max_tilt + HOME_TOLERANCE_RAD:
            raise SafetyError(f"robot.franka.max_tilt: the TCP at {where} is tilted {angle:.3f} rad from its "
                              f"orientation at home_joints, more than {self.cfg.max_tilt}; fix the joints passed "
                              "to reset or max_tilt")

    def arm(self, question: str) -> None:
        """Ask the operator to allow policy motion; `step` moves the robot only after a yes (until the next reset).

        Raises:
            OperatorAbort: the operator said no.
        """
        note = " (dry run: the robot will not move)" if self.cfg.dry_run else " The policy will move the robot."
        if not self._confirm(question + note):
            raise OperatorAbort("the operator declined to start the policy")
        self._armed = True

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool, Info]:
        """Execute one CALVIN relative action (7,) at the control rate; CALVIN's (obs, 0, False, info).

        `info` adds the commanded `target` (7,: xyz, euler, gripper), the measured pose it was limited
        against (`planned_from`, 6,) and which safety limits changed it.

        Raises:
            SafetyError: not reset and armed. ValueError: a malformed action (robot stopped).
            RobotFaultError: the robot is or went into a reflex/error state: the robot is stopped and the
                episode over (the next motion needs `reset` and `arm`, each confirmed by the operator).
        """
        if self._target is None or not self._armed:
            raise SafetyError("step() before reset() and an operator-confirmed arm(): no motion without confirmation")
        with self._stop_on_error():
            current = self.robot.read()
            plan = plan_step(self.cfg, self._target, current.pose, action, self._home)
            gripper = float(plan.action[6])
            moved = not same_pose(plan.target, self._target)
            if not self.cfg.dry_run:
                self.robot.check_ready()  # a fault ends the episode: never recovered here
                if moved:
                    self.robot.move_to(plan.target)
                self.robot.command_gripper(open_=gripper > 0)
            self._gripper_action = gripper
            if moved:  # an unchanged target keeps its exact value: round-off never accumulates
                self._target = plan.target
            overrun = self._wait_for_tick()
            if not self.cfg.dry_run:
                self.robot.check_ready()  # a reflex during this step ends the episode now, not one step later
            state = self.robot.read()
            obs = self._observe(state)
        info = self._info(state)
        info.update(target=np.concatenate([plan.target.position, plan.target.euler, [gripper]]),
                    planned_from=np.concatenate([current.pose.position, current.pose.euler]),
                    clipped_action=plan.clipped_action, clipped_workspace=plan.clipped_workspace,
                    clipped_tilt=plan.clipped_tilt, clipped_step=plan.clipped_step, overrun=overrun,
                    dry_run=self.cfg.dry_run)
        return obs, 0.0, False, info

    def get_obs(self) -> Observation:
        """The current observation (fresh camera frames and robot state)."""
        return self._observe(self.robot.read())

    def get_info(self) -> Info:
        """CALVIN's `robot_info` (tcp_pos, tcp_orn as xyzw quaternion, gripper width, joints, gripper action)."""
        return self._info(self.robot.read())

    def stop(self) -> None:
        """Stop any motion now (nothing to do in a dry run, which never moves)."""
        if self.robot is not None and not self.cfg.dry_run:
            self.robot.stop()

    def close(self) -> None:
        """Stop the robot, disconnect, then release the cameras (idempotent)."""
        try:
            self.stop()
        finally:
            try:
                if self.robot is not None:
                    self.robot.close()
            finally:
                self.robot = None
                for camera in self.cameras.values():
                    camera.close()
                self.cameras.clear()

    def __enter__(self) -> FrankaEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    @contextmanager
    def _stop_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException as err:  # KeyboardInterrupt included: the robot must not keep moving
            self._armed = False
            if isinstance(err, RobotFaultError):  # the episode is over: no target to continue from
                self._target = None
            try:
                self.stop()
            except Exception as stop_err:  # keep the original error; say the stop failed too
                err.add_note(f"stopping the robot also failed: {type(stop_err).__name__}: {stop_err}")
            raise

    def _home_joints(self, robot_obs: np.ndarray | None) -> np.ndarray:
        if robot_obs is None:
            return np.asarray(self.cfg.home_joints, dtype=np.float64)
        robot_obs = np.asarray(robot_obs, dtype=np.float64)
        if robot_obs.shape != (15,) or not np.all(np.isfinite(robot_obs)):
            raise ValueError(f"robot_obs: expected 15 finite values (CALVIN layout), got shape {robot_obs.shape}")
        return robot_obs[7:14]

    def _wait_for_tick(self) -> bool:
        """Sleep until this step's slot at `control_hz` ends; True when the step overran its slot."""
        period, now = 1.0 / self.cfg.control_hz, time.monotonic()
        self._deadline = now + period if self._deadline is None else self._deadline + period
        overrun = now > self._deadline
        if overrun:  # a slow policy: start a fresh schedule rather than rush the next steps to catch up
            self._deadline = now
        time.sleep(max(0.0, self._deadline - time.monotonic()))
        return overrun

    def _observe(self, state: ArmState) -> Observation:
        rgb = {f"rgb_{name}": square_resize(camera.read().rgb, camera.cfg.image_size)
               for name, camera in self.cameras.items()}
        robot_obs = np.concatenate([state.pose.position, state.pose.euler, [state.gripper_width], state.joints,
                                    [self._gripper_action]])
        return {"rgb_obs": rgb, "depth_obs": {}, "robot_obs": robot_obs}

    def _info(self, state: ArmState) -> Info:
        return {"robot_info": {"tcp_pos": state.pose.position, "tcp_orn": state.quaternion_xyzw,
                               "gripper_opening_width": state.gripper_width, "arm_joint_states": state.joints,
                               "gripper_action": self._gripper_action, "mode": state.mode}}


def same_pose(a: Pose, b: Pose) -> bool:
    """Whether two commanded targets are the same pose up to float round-off.

    A zero action keeps CALVIN's target where it is. The running motion already goes there (or the arm
    rests there, after a reset), so `step` sends no new motion: a zero-length Cartesian motion planned
    from a resting arm's measured, never exactly zero, velocity can fail in franky's planner (Ruckig
    -111, seen on franky-sim) and end the episode for nothing.
    """
    return bool(np.allclose(a.matrix, b.matrix, rtol=0.0, atol=SAME_TARGET_TOL))

"""The arm and gripper through franky, with fail-fast connection, fault checks and a reliable stop.

`FrankaArm` is the only place that talks to franky. It never recovers from a fault by itself: the
environment calls `recover` at reset only, after the operator's confirmation. Every blocking wait is a
loop of short waits, so Ctrl-C (KeyboardInterrupt) reaches Python within 50 ms even during a long
motion and the caller's `stop()` runs. franky-sim (`franky-sim -s mujoco`) speaks the same protocol
on loopback.
"""

from __future__ import annotations

import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from envs.franka.config import FrankaConfig
from envs.franka.geometry import Pose

FCI_PORT = 1337  # libfranka's command port
POLL_S = 0.05  # longest time Python is away in a blocking wait (Ctrl-C latency)
STOP_JOIN_S = 2.0
GRIPPER_TIMEOUT_S = 10.0
JOINT_TOLERANCE_RAD = 0.005
SETTLE_TIMEOUT_S = 5.0
JOINT_MOTION_TIMEOUT_S = 60.0  # homing from anywhere in the workspace at the shipped dynamics factor takes < 15 s


class RobotConnectionError(ConnectionError):
    """No Franka answers at the configured address."""


class RobotFaultError(RuntimeError):
    """The robot is in (or went into) a reflex/error state; it was left stopped."""


@dataclass(frozen=True)
class ArmState:
    """One consistent reading of the robot: TCP pose, joints (7,) rad, gripper width m, mode name."""

    pose: Pose
    joints: np.ndarray
    gripper_width: float
    quaternion_xyzw: np.ndarray
    mode: str


def probe_fci(hostname: str, timeout_s: float) -> None:
    """Fail within `timeout_s` unless something accepts TCP connections on the robot's FCI port.

    libfranka's own connect can hang for a long time on an unroutable address; this check makes
    "no robot at this address" a clear error in seconds.
    """
    try:
        with socket.create_connection((hostname, FCI_PORT), timeout=timeout_s):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise RobotConnectionError(
            f"robot.franka.hostname: no Franka FCI at {hostname}:{FCI_PORT} ({reason}, within {timeout_s} s); "
            "check the address, the network link, and that FCI is activated in Desk"
        ) from err


class FrankaArm:
    """A connected Franka arm + Franka Hand."""

    def __init__(self, cfg: FrankaConfig) -> None:
        """Connect to the robot and gripper at `cfg.hostname`.

        Raises:
            RobotConnectionError: nothing listening, or the connection was refused or is incompatible.
        """
        import franky

        self._franky, self.cfg = franky, cfg
        probe_fci(cfg.hostname, cfg.connect_timeout_s)
        self.robot, self.gripper = self._connect()
        self._gripper_future = None
        self._gripper_wanted: bool | None = None
        self._gripper_sent: bool | None = None
        # runs on close() or, if never closed, at exit; holds the attribute dict, not self, so GC still works
        self._finalizer = weakref.finalize(self, _release, self.__dict__)

    def _connect(self) -> tuple[object, object]:
        """The franky Robot and Gripper, or RobotConnectionError within `connect_timeout_s`.

        libfranka waits without limit for the robot's answer, and a robot (or franky-sim) that already
        serves another client (Desk, a second script) accepts the TCP connection but never answers. The
        handshake therefore runs in a daemon thread that is abandoned when it overruns.
        """
        franky, cfg = self._franky, self.cfg
        realtime = franky.RealtimeConfig.Enforce if cfg.require_realtime else franky.RealtimeConfig.Ignore
        result: dict[str, object] = {}

        def connect() -> None:
            try:
                robot = franky.Robot(cfg.hostname, relative_dynamics_factor=cfg.dynamics_factor,
                                     realtime_config=realtime)
                result["arm"] = (robot, franky.Gripper(cfg.hostname))
            except Exception as err:
                result["error"] = err

        thread = threading.Thread(target=connect, name=f"franky-connect-{cfg.hostname}", daemon=True)
        thread.start()
        thread.join(cfg.connect_timeout_s)
        if thread.is_alive():
            raise RobotConnectionError(f"robot.franka.hostname: {cfg.hostname}:{FCI_PORT} accepted the connection "
                                       f"but no Franka answered within {cfg.connect_timeout_s} s; another program "
                                       "(Desk, another script) may hold the robot, or the address is not a Franka")
        if "error" in result:
            err = result["error"]
            raise RobotConnectionError(f"robot.franka.hostname: cannot connect to the Franka at {cfg.hostname}: "
                                       f"{type(err).__name__}: {err}") from err
        return result["arm"]

    # ------------------------------------------------------------------ state

    def read(self) -> ArmState:
        """The current robot state (one `RobotState` read, so pose and joints belong together)."""
        state = self.robot.state
        affine = state.O_T_EE
        return ArmState(pose=Pose.from_matrix(affine.matrix), joints=np.asarray(state.q, dtype=np.float64).copy(),
                        gripper_width=float(self.gripper.width), quaternion_xyzw=np.asarray(affine.quaternion),
                        mode=state.robot_mode.name)

    def pose_at(self, joints: np.ndarray) -> Pose:
        """The TCP pose in the base frame at joint angles (7,), from the robot's own kinematic model."""
        state = self.robot.state
        pose = self.robot.model.pose(self._franky.Frame.EndEffector, np.asarray(joints, dtype=np.float64),
                                     state.F_T_EE, state.EE_T_K)
        return Pose.from_matrix(pose.matrix)

    def in_reflex(self) -> bool:
        """Whether a reflex (collision, limit violation) stopped the robot: the one fault recovery can clear."""
        return self.robot.state.robot_mode == self._franky.RobotMode.Reflex

    def check_ready(self) -> None:
        """Return if the robot can move; never recovers (that takes an operator-confirmed `recover`).

        Raises:
            RobotFaultError: the robot is in a reflex, user-stopped (external activation device pressed),
                being hand-guided, or in another non-idle mode.
        """
        modes = self._franky.RobotMode
        state = self.robot.state
        if state.robot_mode in (modes.Idle, modes.Move):
            return
        hints = {"Reflex": "a reflex (collision, limit violation) stopped it; recover in Desk, or reset with "
                           "robot.franka.auto_recover",
                 "UserStopped": "the external activation device is pressed; release it",
                 "Guiding": "it is being hand-guided; release the guiding button"}
        name = state.robot_mode.name
        raise RobotFaultError(f"robot is in mode {name} ({hints.get(name, 'not ready to move')}); "
                              f"current errors: {state.current_errors}")

    def recover(self) -> None:
        """Run franky's automatic error recovery if the robot is in a reflex, then `check_ready`.

        Only the environment's reset calls this, after the operator confirmed the move home.

        Raises:
            RobotFaultError: recovery was refused, or the robot is still not ready to move.
        """
        if self.in_reflex():
            try:
                self.robot.recover_from_errors()
            except self._franky.CommandException as err:
                raise RobotFaultError(f"robot is in a reflex and automatic error recovery failed: {err}; "
                                      "clear the error in Desk (or with the pilot buttons) and rerun") from err
        self.check_ready()

    # ------------------------------------------------------------------ motion

    def move_to(self, target: Pose) -> None:
        """Start an absolute Cartesian motion to `target`; it replaces (preempts) the running motion."""
        franky = self._franky
        # the dynamics factor is set once, on the Robot: franky multiplies a motion's own factor into it
        motion = franky.CartesianMotion(franky.Affine(target.matrix), franky.ReferenceType.Absolute)
        self._guard(lambda: self.robot.move(motion, asynchronous=True))

    def move_joints(self, joints: np.ndarray) -> None:
        """Stop any Cartesian motion, move to joint angles (7,) rad and wait, interruptibly, until there.

        "There" means measured within `JOINT_TOLERANCE_RAD` of `joints`, not only the end of the motion:
        a Panda settles in milliseconds, a simulated arm on a busy CPU can trail by centimetres, and the
        first policy target is taken from the pose measured after this returns.
        """
        franky = self._franky
        joints = np.asarray(joints, dtype=np.float64)
        self.stop()  # franky cannot switch a running motion from Cartesian to joint control
        self._guard(lambda: self.robot.move(franky.JointMotion(joints), asynchronous=True))
        try:
            self._guard(lambda: self._wait(lambda: self.robot.join_motion(timeout=POLL_S),
                                           timeout_s=JOINT_MOTION_TIMEOUT_S, what="the joint motion"))
        except RobotFaultError:
            self.stop()  # a motion that never ends is not left running
            raise

        def arrived() -> bool:
            if np.abs(self.robot.state.q - joints).max() < JOINT_TOLERANCE_RAD:
                return True
            time.sleep(POLL_S)
            return False

        self._wait(arrived, timeout_s=SETTLE_TIMEOUT_S, what="settling at the joint target")

    def command_gripper(self, open_: bool) -> None:
        """Ask for the gripper open (`gripper_open_width`) or closed (a grasp with `gripper_force`, any object width).

        Never blocks. Commands never overlap (franky crashes when a pending gripper command is dropped): a
        request made while the gripper is busy is sent by a later call once the running command has ended.
        """
        self._gripper_wanted = open_
        self._send_gripper()

    def wait_gripper(self) -> None:
        """Block (interruptibly) until the last requested gripper command has been sent and has finished."""
        def done() -> bool:
            if self._gripper_future is not None and not self._gripper_future.wait(POLL_S):
                return False
            return self._send_gripper()

        self._wait(done, timeout_s=GRIPPER_TIMEOUT_S, what="the gripper")

    def _send_gripper(self) -> bool:
        """Send the wanted gripper command if the gripper is idle; True once nothing is left to send."""
        if self._gripper_future is not None:
            if not self._gripper_future.wait(0.0):
                return False
            self._gripper_future.get()  # re-raises a GripperException from the finished command
            self._gripper_future = None
        if self._gripper_wanted is None or self._gripper_wanted == self._gripper_sent:
            return True
        cfg, open_ = self.cfg, self._gripper_wanted
        if open_:
            self._gripper_future = self.gripper.move_async(cfg.gripper_open_width, cfg.gripper_speed)
        else:  # epsilons span the whole stroke: a grasp succeeds on any object, or on none
            self._gripper_future = self.gripper.grasp_async(0.0, cfg.gripper_speed, cfg.gripper_force,
                                                            epsilon_inner=0.1, epsilon_outer=0.1)
        self._gripper_sent = open_
        return False

    def stop(self) -> None:
        """Stop the running motion, if any, and wait until the robot reports it stopped.

        A stop preempts the running motion, which libfranka reports as a ControlException: that is the
        expected outcome here and is not re-raised. With no motion running nothing is sent: a stop of an
        idle franky-sim robot makes its later Cartesian motions overshoot their targets.
        """
        franky = self._franky
        try:
            if self.robot.join_motion(timeout=0.0):  # True: no motion is running
                return
        except franky.ControlException:  # the motion already ended in an error (a reflex): the arm is still
            return
        self.robot.stop()
        deadline = time.monotonic() + STOP_JOIN_S
        while time.monotonic() < deadline:
            try:
                if self.robot.join_motion(timeout=POLL_S):
                    return
            except franky.ControlException:
                return
        raise RobotFaultError(f"the robot did not confirm the stop within {STOP_JOIN_S} s; use the emergency stop")

    def close(self) -> None:
        """Let a running gripper command finish (interruptibly), then disconnect."""
        if self._gripper_future is not None:
            self._wait(lambda: self._gripper_future.wait(POLL_S), timeout_s=GRIPPER_TIMEOUT_S, what="the gripper")
        self._finalizer()

    def _guard(self, call: Callable[[], object]) -> object:
        """Run a franky call; turn a control, command or planning error into RobotFaultError (never recovers).

        franky reports a failed trajectory plan (Ruckig's negative error codes) as a plain RuntimeError.
        """
        franky = self._franky
        try:
            return call()
        except (franky.ControlException, franky.CommandException, RuntimeError) as err:
            try:
                mode = self.robot.state.robot_mode.name
            except Exception:  # the original error is what matters
                mode = "unknown"
            raise RobotFaultError(f"the robot stopped a motion (robot mode {mode}): {type(err).__name__}: "
                                  f"{err}") from err

    @staticmethod
    def _wait(done: Callable[[], bool], timeout_s: float | None = None, what: str = "the motion") -> None:
        start = time.monotonic()
        while not done():  # each call waits at most POLL_S, so KeyboardInterrupt lands promptly
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                raise RobotFaultError(f"{what} did not finish within {timeout_s} s")


def _release(handles: dict) -> None:
    """Drop the franky handles, gripper future first: franky crashes when a gripper dies mid-command."""
    future = handles.get("_gripper_future")
    if future is not None:
        future.wait(GRIPPER_TIMEOUT_S)
    handles.update(_gripper_future=None, gripper=None, robot=None)

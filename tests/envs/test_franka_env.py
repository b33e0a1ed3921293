"""The real-robot environment (envs/franka) against franky-sim: a MuJoCo Franka on libfranka's protocol.

Cameras play recordings written by tests/fixtures/realsense.py. Each test gets its own `franky_sim_host`
server (tests/conftest.py) and begins with `reset()`, which homes the arm.
Budget: about 70 s in all (1.6 s of it per test starting the simulator), most of it real-time robot motion at 10 Hz.
These tests need franky-sim and its libfranka client (in this process) to keep real time; the server
runs as SCHED_FIFO when allowed (tests/fixtures/sim_robot.py). On a machine oversubscribed by other
work (seen: load > ~12 on 2 cores) the client falls behind and the simulated arm overshoots or franky's
planner fails; the suite alone (CI) runs at load ~2.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from envs.franka.camera import CameraError
from envs.franka.env import FrankaEnv, OperatorAbort, SafetyError
from envs.franka.geometry import euler_to_matrix, rotation_angle, tilt
from envs.franka.robot import RobotConnectionError, RobotFaultError
from tests.fixtures.realsense import frame_number, require_realsense, write_camera_pair
from tests.fixtures.sim_robot import faulty_sim_command, running_sim, sim_franka_config

pytestmark = pytest.mark.robot
SETTLED_M = 0.002


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    require_realsense()
    return write_camera_pair(tmp_path_factory.mktemp("cameras"), 400)


@pytest.fixture
def make_env(franky_sim_host, recordings):
    """Open FrankaEnvs on the test's simulator (confirmations answered yes), closed after the test."""
    opened = []

    def make(confirm=lambda question: True, **changes):
        env = FrankaEnv(sim_franka_config(franky_sim_host, recordings, **changes), confirm=confirm)
        opened.append(env)
        return env

    yield make
    for env in opened:
        env.close()


def hold(env, gripper=1.0, max_steps=30):
    """Zero actions until the measured TCP pose reaches the commanded target (CALVIN's target stays put)."""
    for _ in range(max_steps):
        obs, _, _, info = env.step(np.r_[np.zeros(6), gripper])
        turn = euler_to_matrix(obs["robot_obs"][3:6]).T @ euler_to_matrix(info["target"][3:6])
        if np.linalg.norm(obs["robot_obs"][:3] - info["target"][:3]) < SETTLED_M and rotation_angle(turn) < 0.005:
            return obs, info
    raise AssertionError(f"the arm did not reach {info['target'][:3]}, it is at {obs['robot_obs'][:3]}")


def resting_tcp(env, timeout_s=5.0):
    """The TCP position (3,) once the arm has stopped moving (two readings 0.2 s apart within 0.2 mm)."""
    deadline, last = time.monotonic() + timeout_s, env.get_info()["robot_info"]["tcp_pos"]
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = env.get_info()["robot_info"]["tcp_pos"]
        if np.linalg.norm(now - last) < 0.0002:
            return now
        last = now
    raise AssertionError("the arm kept moving")


def run(env, action, steps):
    for _ in range(steps):
        obs, _, _, info = env.step(np.asarray(action, dtype=float))
    return obs, info


def test_an_episode_moves_the_arm_in_the_commanded_world_directions(make_env):
    env = make_env()
    obs = env.reset()
    assert obs["rgb_obs"]["rgb_static"].shape == (200, 200, 3) and obs["rgb_obs"]["rgb_gripper"].shape == (84, 84, 3)
    assert obs["robot_obs"].shape == (15,) and obs["depth_obs"] == {} and "scene_obs" not in obs
    np.testing.assert_allclose(obs["robot_obs"][7:14], env.cfg.home_joints, atol=0.02)
    env.arm("Scene ready?")
    frames, target = [frame_number(obs["rgb_obs"]["rgb_static"])], obs["robot_obs"][:6].copy()
    for axis, sign in ((0, 1), (1, 1), (2, -1)):  # world -z is the downward gripper's own +z
        start = obs["robot_obs"][:3].copy()
        action = np.r_[np.zeros(6), 1.0]
        action[axis] = 0.25 * sign
        _, info = run(env, action, 8)
        assert not info["clipped_step"]
        target[axis] += sign * 8 * 0.25 * 0.02  # CALVIN: 0.02 m per unit of action, in the world frame
        np.testing.assert_allclose(info["target"][:3], target[:3], atol=1e-9)
        obs, info = hold(env)  # the arm gets there: the measured TCP moved along the same world axis
        moved = obs["robot_obs"][:3] - start
        assert moved[axis] == pytest.approx(sign * 0.04, abs=0.005), moved
        assert np.abs(np.delete(moved, axis)).max() < 0.004, moved
        frames.append(frame_number(obs["rgb_obs"]["rgb_static"]))
    yaw = info["target"][5]
    run(env, [0, 0, 0, 0, 0, 0.5, 1.0], 6)
    obs, info = hold(env)
    assert info["target"][5] - yaw == pytest.approx(6 * 0.5 * 0.05)  # about the world z axis: CALVIN's euler z
    assert np.angle(np.exp(1j * (obs["robot_obs"][5] - info["target"][5]))) == pytest.approx(0, abs=0.005)
    assert np.all(np.diff(frames) > 0)  # one fresh recorded frame per observation, in order


def test_the_gripper_follows_the_last_action(make_env):
    env = make_env()
    env.reset()
    env.arm("Scene ready?")
    for gripper, reached in ((-1.0, lambda width: width < 0.01), (1.0, lambda width: width > 0.07)):
        widths = []
        while not widths or not reached(widths[-1]):  # 0.08 m at 0.1 m/s: about 8 steps on an idle CPU
            obs, _ = run(env, [0, 0, 0, 0, 0, 0, gripper], 1)
            widths.append(obs["robot_obs"][6])
            assert len(widths) < 50, widths
            assert obs["robot_obs"][14] == gripper
    run(env, [0, 1.0, 0, 0, 0, 0, 1.0], 3)
    obs = env.reset()  # mid-motion, as CALVIN's loop may: the Cartesian motion is stopped, then the arm homes
    np.testing.assert_allclose(obs["robot_obs"][7:14], env.cfg.home_joints, atol=0.02)


def test_a_zero_action_sends_no_new_motion(make_env):
    env = make_env()
    env.reset()
    env.arm("Scene ready?")
    sent = []
    move_to = env.robot.move_to
    env.robot.move_to = lambda target: sent.append(target) or move_to(target)
    run(env, np.r_[np.zeros(6), 1.0], 3)  # the arm rests at the target reset measured: nothing to plan
    assert sent == []
    _, info = run(env, [0.5, 0, 0, 0, 0, 0, 1.0], 1)
    run(env, np.r_[np.zeros(6), 1.0], 3)  # the running motion already goes to the unchanged target
    assert len(sent) == 1
    np.testing.assert_allclose(sent[0].position, info["target"][:3])


def test_targets_outside_the_workspace_are_clipped_and_never_reached(make_env, franky_sim_host, recordings):
    home_z = 0.487  # TCP height at the shipped home pose on franky-sim's FR3
    env = make_env(workspace_min=(0.25, -0.35, home_z - 0.03))
    obs = env.reset()
    env.arm("Scene ready?")
    floor = home_z - 0.03
    lowest, clipped = [], []
    for _ in range(10):  # 10 steps of half-speed "down": 10 cm commanded, 3 cm allowed
        obs, _, _, info = env.step(np.array([0, 0, -0.5, 0, 0, 0, 1.0]))
        lowest.append(obs["robot_obs"][2])
        clipped.append(info["clipped_workspace"])
        assert info["target"][2] >= floor - 1e-9  # no commanded target ever leaves the box
    obs, _ = hold(env)
    assert any(clipped)
    # franky-sim's joint PD follows the commanded trajectory within a few mm (up to ~1 cm on a CPU starved by
    # other processes, when its 1 kHz loop falls behind wall-clock time); a real Panda tracks far closer
    assert min(lowest) > floor - 0.01
    assert obs["robot_obs"][2] == pytest.approx(floor, abs=SETTLED_M)


def test_a_reset_to_joints_outside_the_workspace_is_refused_before_anything_moves(make_env):
    questions = []
    env = make_env(confirm=lambda q: questions.append(q) or True, workspace_max=(0.5, 0.35, 0.65))
    home = env.reset()["robot_obs"]  # the shipped home pose: TCP x = 0.307
    far = home.copy()
    far[7:14] = [0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785]  # franky-sim's start pose: TCP x = 0.554
    with pytest.raises(SafetyError, match=r"TCP at the home joints, \[0.554"):
        env.reset(robot_obs=far)
    assert len(questions) == 1  # refused before the operator was even asked
    np.testing.assert_allclose(env.get_obs()["robot_obs"][:3], home[:3], atol=0.001)


def test_no_step_commands_more_than_the_step_limit(make_env):
    env = make_env(max_step_translation=0.006, max_step_rotation=0.01)
    obs = env.reset()
    env.arm("Scene ready?")
    start = obs["robot_obs"].copy()
    for _ in range(10):  # asks for 2 cm and 0.05 rad per step
        obs, _, _, info = env.step(np.array([1.0, 0, 0, 0, 0, 1.0, 1.0]))
        assert info["clipped_step"]
        assert np.linalg.norm(info["target"][:3] - info["planned_from"][:3]) <= 0.006 + 1e-9
        turn = euler_to_matrix(info["planned_from"][3:6]).T @ euler_to_matrix(info["target"][3:6])
        assert rotation_angle(turn) <= 0.01 + 1e-9
    obs, _ = hold(env)
    assert 0.03 < obs["robot_obs"][0] - start[0] <= 10 * 0.006 + SETTLED_M  # 20 cm asked for
    assert abs(np.angle(np.exp(1j * (obs["robot_obs"][5] - start[5])))) <= 10 * 0.01 + 0.005


def test_targets_tilted_past_max_tilt_are_swung_back_and_never_commanded(make_env):
    env = make_env(max_tilt=0.1)
    home = euler_to_matrix(env.reset()["robot_obs"][3:6])  # measured at the home joints: tilt 0
    env.arm("Scene ready?")
    clipped = []
    for _ in range(6):  # 0.3 rad of roll asked for
        _, _, _, info = env.step(np.array([0, 0, 0, 1.0, 0, 0, 1.0]))
        clipped.append(info["clipped_tilt"])
        assert tilt(euler_to_matrix(info["target"][3:6]), home) <= 0.1 + 0.002  # the model's home vs measured
    obs, _ = hold(env)
    assert any(clipped) and tilt(euler_to_matrix(obs["robot_obs"][3:6]), home) == pytest.approx(0.1, abs=0.01)


def test_unsafe_limits_are_refused_before_anything_opens(recordings):
    cfg = sim_franka_config("127.254.254.254", recordings, max_step_translation=float("inf"))  # nothing there
    with pytest.raises(ValueError, match="robot.franka.max_step_translation: must be finite"):
        FrankaEnv(cfg, confirm=lambda q: True)


def test_dry_run_computes_targets_but_never_moves(make_env):
    questions = []
    env = make_env(confirm=lambda q: questions.append(q) or True, dry_run=True)
    obs = env.reset()
    env.arm("Scene ready?")
    assert len(questions) == 1 and "dry run" in questions[0]  # homing is skipped, so only the arm question
    start = obs["robot_obs"].copy()
    obs, info = run(env, [1.0, -1.0, 1.0, 0, 0, 1.0, -1.0], 10)
    time.sleep(0.3)
    after = env.get_obs()["robot_obs"]
    np.testing.assert_allclose(after[:7], start[:7], atol=0.001)  # pose and gripper width unchanged
    # the targets are computed and checked as usual: limited to one step from the (unmoving) robot
    assert np.linalg.norm(info["target"][:3] - start[:3]) == pytest.approx(env.cfg.max_step_translation)
    assert info["dry_run"] and info["clipped_step"]


def test_no_motion_without_operator_confirmation(make_env):
    env = make_env()
    with pytest.raises(SafetyError, match="confirm"):
        env.step(np.r_[np.zeros(6), 1.0])
    env.reset()
    env.arm("Scene ready?")
    run(env, [0, 1.0, 0, 0, 0, 0, 1.0], 5)
    moved, _ = hold(env)
    env.close()  # a Franka serves one client at a time

    declining = make_env(confirm=lambda q: False)
    away = resting_tcp(declining)  # franky-sim's arm sags a few mm when a client disconnects; let it settle
    assert np.linalg.norm(away - moved["robot_obs"][:3]) < 0.02  # still away from home
    with pytest.raises(OperatorAbort):
        declining.reset()  # would move home
    with pytest.raises(OperatorAbort):
        declining.arm("Scene ready?")
    with pytest.raises(SafetyError):
        declining.step(np.r_[np.zeros(6), 1.0])
    time.sleep(0.3)
    np.testing.assert_allclose(declining.get_obs()["robot_obs"][:3], away, atol=0.001)


def test_ctrl_c_stops_the_robot_mid_motion(make_env):
    env = make_env()
    env.reset()
    env.arm("Scene ready?")
    # Python's own Ctrl-C handler, as in a terminal (a shell starts background jobs with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.8, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run(env, [0, 1.0, 0, 0, 0, 0, 1.0], 60)  # 6 s of full-speed motion, interrupted after 0.8 s
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    first = env.get_info()["robot_info"]
    time.sleep(0.5)
    second = env.get_info()["robot_info"]
    assert second["mode"] == "Idle"
    assert np.linalg.norm(second["tcp_pos"] - first["tcp_pos"]) < 0.001  # stopped, not drifting to a target
    assert second["tcp_pos"][1] < 0.25  # far short of the 1.2 m the policy asked for
    with pytest.raises(SafetyError):  # an interrupt disarms: motion needs a new confirmation
        env.step(np.r_[np.zeros(6), 1.0])


def test_a_malformed_action_stops_the_robot_and_raises(make_env):
    env = make_env()
    env.reset()
    env.arm("Scene ready?")
    run(env, [0, -1.0, 0, 0, 0, 0, 1.0], 3)
    with pytest.raises(ValueError, match="gripper"):
        env.step(np.array([0, -1.0, 0, 0, 0, 0, 0.5]))
    time.sleep(0.2)
    assert env.get_info()["robot_info"]["mode"] == "Idle"


def test_no_robot_at_the_address_fails_within_the_timeout(recordings):
    cfg = sim_franka_config("127.254.254.254", recordings, connect_timeout_s=1.0)  # nothing listens there
    start = time.monotonic()
    with pytest.raises(RobotConnectionError, match=r"robot.franka.hostname: no Franka FCI at 127.254.254.254:1337"):
        FrankaEnv(cfg, confirm=lambda q: True)
    assert time.monotonic() - start < 2.5


def test_a_robot_serving_another_client_fails_within_the_timeout(make_env):
    first = make_env()
    first.reset()
    start = time.monotonic()
    with pytest.raises(RobotConnectionError, match="no Franka answered within 1.0 s; another program"):
        make_env(connect_timeout_s=1.0)
    assert time.monotonic() - start < 2.5
    first.close()  # the abandoned handshake now completes and lets go; wait for it, as the next test needs the robot
    for thread in threading.enumerate():
        if thread.name == f"franky-connect-{first.cfg.hostname}":
            thread.join(timeout=10)
            assert not thread.is_alive()


def test_a_missing_camera_fails_before_the_robot_is_contacted(recordings):
    cfg = sim_franka_config("127.254.254.254", recordings)
    from dataclasses import replace

    cfg = replace(cfg, gripper_camera=replace(cfg.gripper_camera, recording=None, serial="000000000000"))
    with pytest.raises(CameraError, match="robot.franka.gripper_camera.serial: no RealSense camera 000000000000"):
        FrankaEnv(cfg, confirm=lambda q: True)


def test_a_reflex_is_reported_or_recovered_and_the_robot_is_left_stopped(recordings, tmp_path):
    recovery = tmp_path / "recovery"
    recovery.write_text("fail")
    home = sim_franka_config("-", recordings).home_joints  # start there: the test is about faults, not homing
    with running_sim(faulty_sim_command(recovery, home)) as host:
        for auto_recover, says in ((False, "mode Reflex"), (True, "automatic error recovery failed")):
            env = FrankaEnv(sim_franka_config(host, recordings, auto_recover=auto_recover), confirm=lambda q: True)
            start = time.monotonic()
            with env, pytest.raises(RobotFaultError, match=says):
                env.reset()
            assert time.monotonic() - start < 3.0
        recovery.write_text("succeed")
        with FrankaEnv(sim_franka_config(host, recordings), confirm=lambda q: True) as env:
            obs = env.reset()  # recovers once, then homes
            assert env.get_info()["robot_info"]["mode"] == "Idle"
            np.testing.assert_allclose(obs["robot_obs"][7:14], env.cfg.home_joints, atol=0.02)


def fault_mid_episode(env, reflex, events) -> str:
    """Reset, arm, move, then inject a reflex: the episode ends, the arm holds, nothing more reaches the robot.

    Returns the robot's event log as it was when the fault was reported.
    """
    env.reset()
    env.arm("Scene ready?")
    run(env, [0, 0.5, 0, 0, 0, 0, 1.0], 3)
    reflex.touch()  # a collision: the robot aborts the motion and holds
    with pytest.raises(RobotFaultError, match="mode Reflex"):  # seen in the state or in the aborted motion
        run(env, [0, 0.5, 0, 0, 0, 0, 1.0], 2)  # the step it happens in raises
    at_fault = events.read_text()
    assert at_fault.endswith("move\nreflex\n")
    first = env.get_info()["robot_info"]
    with pytest.raises(SafetyError):  # disarmed
        env.step(np.r_[np.zeros(6), 1.0])
    env.arm("Scene ready?")  # arming again is not enough: the fault ended the episode
    with pytest.raises(SafetyError, match="reset"):
        env.step(np.r_[np.zeros(6), 1.0])
    time.sleep(0.3)
    second = env.get_info()["robot_info"]
    assert second["mode"] == "Reflex" and np.linalg.norm(second["tcp_pos"] - first["tcp_pos"]) < 0.001
    assert events.read_text() == at_fault  # no motion and no recovery reached the robot
    return at_fault


def test_a_reflex_mid_episode_ends_it_and_nothing_moves_before_a_confirmed_reset(recordings, tmp_path):
    """No recovery mid-episode, whatever auto_recover says: only a reset, after the operator's yes, recovers."""
    recovery, reflex, events = tmp_path / "recovery", tmp_path / "reflex", tmp_path / "events"
    recovery.write_text("succeed")  # recovery would clear the reflex at once: nothing but the env holds it off
    home = sim_franka_config("-", recordings).home_joints
    questions = []

    def confirm(question: str) -> bool:
        questions.append((question, events.read_text()))
        return True

    with running_sim(faulty_sim_command(recovery, home, reflex_file=reflex, event_log=events)) as host:
        with FrankaEnv(sim_franka_config(host, recordings, auto_recover=False), confirm=confirm) as env:
            at_fault = fault_mid_episode(env, reflex, events)
            asked = len(questions)
            with pytest.raises(RobotFaultError, match="mode Reflex"):
                env.reset()
            assert len(questions) == asked and events.read_text() == at_fault  # not even asked
        with FrankaEnv(sim_franka_config(host, recordings, auto_recover=True), confirm=confirm) as env:
            obs = env.reset()  # the robot is still in the reflex
            question, seen = questions[-1]
            assert "reflex" in question and seen == at_fault  # asked before recovering or moving
            assert events.read_text()[len(at_fault):].split() == ["recover-ok", "move"]  # then recovered, homed
            np.testing.assert_allclose(obs["robot_obs"][7:14], home, atol=0.02)
            fault_mid_episode(env, reflex, events)  # auto_recover on: still never recovered mid-episode

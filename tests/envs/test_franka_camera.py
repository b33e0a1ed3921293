"""RealSense cameras (envs/franka/camera.py), against recordings the tests write with a software device.

No camera is attached here, so the live path is checked only for its fast, clear failure.
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import time
import weakref

import numpy as np
import pytest

from envs.franka.camera import CameraError, RealSenseCamera, square_resize
from envs.franka.config import CameraConfig
from tests.fixtures.realsense import numbered_frames, require_realsense, write_recording

pytestmark = pytest.mark.robot


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two recordings of 40 numbered frames: colour only, and colour + depth (as a D435 records)."""
    require_realsense()
    folder = tmp_path_factory.mktemp("recordings")
    frames = numbered_frames(40, width=64, height=48)
    depth = [np.full((48, 64), 0.5 + 0.01 * i, np.float32) for i in range(40)]
    return {"frames": frames,
            "color": write_recording(folder / "color.db3", "111111111111", frames),
            "color_depth": write_recording(folder / "color_depth.db3", "222222222222", frames, depth)}


def camera_config(**changes) -> CameraConfig:
    fields = {"serial": None, "recording": None, "width": 64, "height": 48, "fps": 30, "image_size": 32}
    return CameraConfig(**{**fields, **changes})


@pytest.mark.parametrize("name", ["color", "color_depth"])
def test_playback_delivers_every_recorded_frame_once_in_order(recorded, name):
    camera = RealSenseCamera(camera_config(recording=str(recorded[name])), "cam")
    try:
        for i, expected in enumerate(recorded["frames"]):
            time.sleep(0.002 if i % 10 else 0.05)  # a slow reader must not lose frames
            frame = camera.read()
            np.testing.assert_array_equal(frame.rgb, expected)
            assert frame.timestamp_ms == pytest.approx(i * 1000 / 30, abs=1e-3)
        with pytest.raises(CameraError, match="ended"):
            camera.read()
    finally:
        camera.close()


def test_a_recording_is_checked_against_the_configured_serial(recorded):
    camera = RealSenseCamera(camera_config(serial="111111111111", recording=str(recorded["color"])), "cam")
    assert camera.serial == "111111111111"
    camera.close()
    with pytest.raises(CameraError, match=r"robot.franka.gripper_camera.recording: .* recorded from camera "
                                          r"111111111111, not robot.franka.gripper_camera.serial 999"):
        RealSenseCamera(camera_config(serial="999", recording=str(recorded["color"])), "robot.franka.gripper_camera")


def test_missing_or_unreadable_recordings_fail_clearly(tmp_path):
    require_realsense()
    with pytest.raises(CameraError, match="cam.recording: no such file"):
        RealSenseCamera(camera_config(recording=str(tmp_path / "none.db3")), "cam")
    junk = tmp_path / "junk.db3"
    junk.write_text("not a recording")
    with pytest.raises(CameraError, match="cam.recording: .*junk.db3 is not a readable RealSense recording"):
        RealSenseCamera(camera_config(recording=str(junk)), "cam")
    other = tmp_path / "other.db3"  # an SQLite file, but not a ROS2 bag
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE runs (id INTEGER)")
    with pytest.raises(CameraError, match=r"cam.recording: .*other.db3 is not a readable RealSense recording: "
                                          r"an SQLite file without the ROS2 bag tables"):
        RealSenseCamera(camera_config(recording=str(other)), "cam")


def test_a_dropped_camera_is_freed_at_once_without_the_cyclic_gc(recorded):
    """librealsense objects must die on the thread that drops them, not whenever (and wherever) the GC runs."""
    camera = RealSenseCamera(camera_config(recording=str(recorded["color"])), "cam")
    camera.read()
    alive = weakref.ref(camera)
    gc.disable()
    try:
        del camera
        assert alive() is None
    finally:
        gc.enable()


def test_a_camera_that_is_not_connected_fails_fast_naming_the_key():
    require_realsense()
    start = time.monotonic()
    with pytest.raises(CameraError, match=r"robot.franka.static_camera.serial: no RealSense camera 123456 "
                                          r"is connected \(connected: none\)"):
        RealSenseCamera(camera_config(serial="123456"), "robot.franka.static_camera")
    with pytest.raises(CameraError, match="robot.franka.static_camera.serial: not set"):
        RealSenseCamera(camera_config(), "robot.franka.static_camera")
    assert time.monotonic() - start < 2.0  # pyrealsense2's own pipeline would wait 15 s


def test_closing_mid_recording_does_not_hang(recorded):
    camera = RealSenseCamera(camera_config(recording=str(recorded["color"])), "cam")
    camera.read()
    time.sleep(0.3)  # the playback is now blocked on the full queue
    start = time.monotonic()
    camera.close()
    camera.close()
    assert time.monotonic() - start < 1.0


def test_square_resize_crops_the_centre_without_distortion():
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, 8:56] = 200  # the centred 48x48 square
    image[:, :8] = image[:, 56:] = 10  # the side bands a plain resize would squeeze in
    out = square_resize(image, 24)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    assert np.all(out == 200)

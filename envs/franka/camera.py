"""Intel RealSense colour cameras through pyrealsense2: live by serial number, or played back from a recording.

One class serves both sources with one code path: the colour sensor streams into a callback that
fills a queue, and `read()` takes from it.
* live (`cfg.serial`): the queue holds only the newest frame, so a slow reader never sees stale images;
  a missing camera fails at once, listing the serials that *are* connected (pyrealsense2's own
  pipeline waits 15 s before saying "No device connected");
* playback (`cfg.recording`, a ROS2 `.db3` file; pyrealsense2 2.59 records only .db3): not in real
  time, and the callback blocks until the reader takes each frame, so every recorded frame arrives
  exactly once and in order (librealsense's pipeline drops frames in this mode). If `cfg.serial` is
  also set, the recording must come from that camera.
Depth is not streamed: the policy uses colour only, and the observation's `depth_obs` stays empty.

Run `python -m envs.franka.camera` to list connected cameras and their serial numbers.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import sqlite3
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from envs.franka.config import CameraConfig

FRAME_TIMEOUT_S = 2.0
PLAYBACK_QUEUE = 4


class CameraError(RuntimeError):
    """A camera is missing, misconfigured, or stopped delivering frames."""


@dataclass(frozen=True)
class CameraFrame:
    """One colour frame (H, W, 3) uint8 and its device timestamp in milliseconds."""

    rgb: np.ndarray
    timestamp_ms: float


def _rs():
    try:
        import pyrealsense2 as rs
    except ImportError as err:  # the wheel imports only with libusb-1.0-0 installed (make system-deps)
        raise CameraError(f"pyrealsense2 is not importable ({err}); install the robot extra and libusb-1.0-0") from err
    return rs


def list_cameras() -> list[tuple[str, str]]:
    """(serial number, product name) of every connected RealSense."""
    rs = _rs()
    return [(d.get_info(rs.camera_info.serial_number), d.get_info(rs.camera_info.name))
            for d in rs.context().query_devices()]


class RealSenseCamera:
    """The colour stream of one RealSense, live or from a `.db3` recording."""

    def __init__(self, cfg: CameraConfig, name: str) -> None:
        """Start streaming.

        Args:
            cfg: the camera's configuration.
            name: the config key of this camera (e.g. `robot.franka.static_camera`), used in errors.

        Raises:
            CameraError: no such camera or recording, a serial mismatch, or no matching colour stream.
        """
        rs = _rs()
        self.cfg, self.name, self._live = cfg, name, cfg.recording is None
        self._frames: queue.Queue = queue.Queue(maxsize=1 if self._live else PLAYBACK_QUEUE)
        self._closing = threading.Event()
        self._context = rs.context()  # owns a loaded recording; must outlive the stream
        self._device = self._find_device(rs) if self._live else self._load_recording(rs)
        self.serial = self._device.get_info(rs.camera_info.serial_number)
        if cfg.serial is not None and self.serial != cfg.serial:
            self._device = self._playback = None  # released here, not whenever the traceback is collected
            raise CameraError(f"{name}.recording: {cfg.recording} was recorded from camera {self.serial}, "
                              f"not {name}.serial {cfg.serial}")
        self._sensor, profile = self._color_profile(rs)
        self._sensor.open(profile)
        # The callback holds the queue, not `self`: with no reference cycle, a dropped camera's librealsense
        # objects are freed at once on this thread, never later by the cyclic GC (in any thread, mid-stream).
        self._sensor.start(functools.partial(_deliver, self._frames, self._closing, self._live))
        # librealsense calling into a finalizing interpreter aborts it: stop at exit even if never closed
        self._finalizer = weakref.finalize(self, _stop_stream, self._sensor, self._closing)

    def _find_device(self, rs):
        if self.cfg.serial is None:
            raise CameraError(f"{self.name}.serial: not set; connected RealSense cameras: {list_cameras() or 'none'}")
        devices = {d.get_info(rs.camera_info.serial_number): d for d in self._context.query_devices()}
        if self.cfg.serial not in devices:
            raise CameraError(f"{self.name}.serial: no RealSense camera {self.cfg.serial} is connected "
                              f"(connected: {sorted(devices) or 'none'})")
        return devices[self.cfg.serial]

    def _load_recording(self, rs):
        path = Path(self.cfg.recording)
        if not path.is_file():
            raise CameraError(f"{self.name}.recording: no such file: {path}")
        problem = _recording_problem(path)
        if problem:  # librealsense's own error path for a bad file once aborted the process from its thread
            raise CameraError(f"{self.name}.recording: {path} is not a readable RealSense recording: {problem}")
        try:
            device = self._context.load_device(str(path))
        except RuntimeError as err:
            raise CameraError(f"{self.name}.recording: {path} is not a readable RealSense recording: {err}") from err
        self._playback = device.as_playback()  # must stay referenced, or playback silently returns to real time
        self._playback.set_real_time(False)
        return device

    def _color_profile(self, rs):
        """The colour sensor and its rgb8 profile (live: the configured size and rate; playback: as recorded)."""
        offered = []
        for sensor in self._device.query_sensors():
            for profile in sensor.get_stream_profiles():
                if profile.stream_type() != rs.stream.color:
                    continue
                video = profile.as_video_stream_profile()
                mode = (video.width(), video.height(), video.fps(), str(video.format()))
                offered.append(mode)
                wanted = (self.cfg.width, self.cfg.height, self.cfg.fps, str(rs.format.rgb8))
                if not self._live or mode == wanted:
                    return sensor, profile
        source = self.cfg.recording or f"camera {self.serial}"
        wanted = f"{self.cfg.width}x{self.cfg.height}@{self.cfg.fps}"
        raise CameraError(f"{self.name}: {source} offers no rgb8 colour stream {wanted}; "
                          f"colour modes offered: {offered or 'none'}")

    def read(self) -> CameraFrame:
        """The next frame (live: the newest one).

        Raises:
            CameraError: the recording ended, or no frame arrived within 2 s.
        """
        deadline = time.monotonic() + FRAME_TIMEOUT_S
        while True:
            try:
                return self._frames.get(timeout=0.05)
            except queue.Empty:
                if not self._live and str(self._playback.current_status()).endswith("stopped"):
                    raise CameraError(f"{self.name}: recording {self.cfg.recording} ended") from None
                if time.monotonic() > deadline:
                    raise CameraError(f"{self.name}: camera {self.serial} sent no frame within {FRAME_TIMEOUT_S} s") \
                        from None

    def close(self) -> None:
        """Stop the stream (idempotent)."""
        self._finalizer()


def _recording_problem(path: Path) -> str | None:
    """Why `path` is not a librealsense ROS2 recording (an SQLite file with its `/file_version` topic), or None."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"topics", "messages"} <= tables:
                return f"an SQLite file without the ROS2 bag tables topics and messages (it has {sorted(tables)})"
            if db.execute("SELECT 1 FROM topics WHERE name = '/file_version'").fetchone() is None:
                return "a ROS2 bag without librealsense's /file_version topic"
    except sqlite3.DatabaseError as err:
        return f"not a ROS2 .db3 bag ({err})"
    return None


def _deliver(frames: queue.Queue, closing: threading.Event, live: bool, frame) -> None:
    """Runs on librealsense's callback thread: hand one frame (copied out of the SDK buffer) to `read`."""
    item = CameraFrame(rgb=np.asanyarray(frame.get_data()).copy(), timestamp_ms=float(frame.get_timestamp()))
    if live:  # keep only the newest frame
        try:
            frames.get_nowait()
        except queue.Empty:
            pass
        frames.put_nowait(item)
        return
    while not closing.is_set():  # playback waits for this callback: that is the back-pressure
        try:
            frames.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _stop_stream(sensor, closing: threading.Event) -> None:
    closing.set()  # first: a playback callback blocked on the full queue must return for stop() to finish
    sensor.stop()
    sensor.close()


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop an (H, W, 3) image to a square (no distortion) and resize it bilinearly to (size, size, 3)."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = np.ascontiguousarray(image[top : top + side, left : left + side])
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR))


def main() -> int:
    """List connected RealSense cameras (serial, name)."""
    cameras = list_cameras()
    for serial, name in cameras:
        print(f"{serial}\t{name}")
    if not cameras:
        print("no RealSense camera connected", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

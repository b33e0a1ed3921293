"""CALVIN's two cameras (calvin_env `camera/*`, `conf/cameras/cameras/{static,gripper}.yaml`).

The static camera is fixed (200x200, fov 10 deg); the gripper camera rides on the `gripper_cam`
link (84x84, fov 75 deg) looking along the link's y axis with -z up. Both render with pybullet's
CPU TinyRenderer. Depth is metric: `far * near / (far - (far - near) * zbuffer)`.

Static-background cache: TinyRenderer has no shadows by default and no back-face culling, and a
triangle costs its whole screen bounding box, so the big table, cabinet and floor dominate a
200x200 frame. What never moves or changes colour (the `static_parts`) is rendered once, alone, in
a scratch pybullet client; each frame then renders only the rest (static parts hidden by alpha 0,
which TinyRenderer skips) and composites the two by depth. Per-pixel shading does not depend on
other objects, so the composite equals a full render (tests compare them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from envs.playtable.bullet import direct_client
from envs.playtable.layout import CALVIN_DIR


def _config(name: str) -> dict:
    return yaml.safe_load(Path(CALVIN_DIR / f"camera_{name}.yaml").read_text())


class Camera(ABC):
    """Shared rendering: RGB (H, W, 3) uint8 and metric depth (H, W) float32."""

    name: str

    def __init__(self, client: Any, config: dict) -> None:
        """Read CALVIN's intrinsics from its camera YAML dict."""
        self.p = client
        self.width, self.height = int(config["width"]), int(config["height"])
        self.near, self.far = float(config["nearval"]), float(config["farval"])
        self.projection = client.computeProjectionMatrixFOV(fov=config["fov"], aspect=config["aspect"],
                                                            nearVal=self.near, farVal=self.far)

    @abstractmethod
    def view_matrix(self) -> list[float]:
        """The 4x4 view matrix (column-major list), evaluated now."""

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """RGB (H, W, 3) uint8 and metric depth (H, W) float32 of the current scene."""
        rgb, z = self._render_buffers()
        return rgb, self._metric(z)

    def _render_buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """RGB (H, W, 3) uint8 and the raw z-buffer (H, W) float32 in [0, 1]."""
        _, _, rgba, zbuffer, _ = self.p.getCameraImage(
            self.width, self.height, self.view_matrix(), self.projection,
            renderer=self.p.ER_TINY_RENDERER, flags=self.p.ER_NO_SEGMENTATION_MASK)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(self.height, self.width, 4)[:, :, :3]
        return np.ascontiguousarray(rgb), np.asarray(zbuffer, dtype=np.float32).reshape(self.height, self.width)

    def _metric(self, z: np.ndarray) -> np.ndarray:
        return (self.far * self.near / (self.far - (self.far - self.near) * z)).astype(np.float32)


class StaticCamera(Camera):
    """The fixed scene camera (`rgb_static`, `depth_static`)."""

    name = "static"

    def __init__(self, client: Any, static_parts: list[tuple[int, int]] | None = None,
                 load_static: Callable[[Any], None] | None = None) -> None:
        """Eye, target and up vector from CALVIN's static.yaml.

        Args:
            client: the pybullet client.
            static_parts: (body uid, link index) in `client` of visuals that never move nor change
                colour, all shapes of a link sharing one colour; None renders every frame in full.
            load_static: loads exactly those visuals into a fresh client (for the background).
        """
        config = _config("static")
        super().__init__(client, config)
        self._view = client.computeViewMatrix(cameraEyePosition=config["look_from"],
                                              cameraTargetPosition=config["look_at"],
                                              cameraUpVector=config["up_vector"])
        self._static = {part: self._colour(*part) for part in static_parts or []}
        self._background = self._render_background(load_static) if static_parts else None

    def view_matrix(self) -> list[float]:
        """Fixed view."""
        return self._view

    def _colour(self, uid: int, link: int) -> tuple[float, ...]:
        colours = {tuple(s[7]) for s in self.p.getVisualShapeData(uid) if s[1] == link}
        if len(colours) != 1:
            raise ValueError(f"static part ({uid}, {link}) must have visuals of exactly one colour, got {colours}")
        return colours.pop()

    def _render_background(self, load_static: Callable[[Any], None] | None) -> tuple[np.ndarray, np.ndarray]:
        if load_static is None:
            raise ValueError("static_parts needs load_static to render the background")
        scratch = direct_client()
        try:
            load_static(scratch)
            camera = StaticCamera(scratch)
            return camera._render_buffers()
        finally:
            scratch.disconnect()

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """RGB (200, 200, 3) uint8 and metric depth (200, 200) float32, via the background cache."""
        if self._background is None:
            return super().render()
        for uid, link in self._static:
            self.p.changeVisualShape(uid, link, rgbaColor=[0, 0, 0, 0])
        try:
            rgb, z = self._render_buffers()
        finally:
            for (uid, link), colour in self._static.items():
                self.p.changeVisualShape(uid, link, rgbaColor=colour)
        back_rgb, back_z = self._background
        front = z < back_z
        return np.where(front[..., None], rgb, back_rgb), self._metric(np.where(front, z, back_z))


class GripperCamera(Camera):
    """The wrist camera (`rgb_gripper`, `depth_gripper`) on the robot's `gripper_cam` link."""

    name = "gripper"

    def __init__(self, client: Any, robot_uid: int, link: int) -> None:
        """Follow link `link` of body `robot_uid`."""
        super().__init__(client, _config("gripper"))
        self.robot_uid, self.link = robot_uid, link

    def view_matrix(self) -> list[float]:
        """Look along the link's y axis, up = -z, from the link origin."""
        state = self.p.getLinkState(self.robot_uid, self.link, computeForwardKinematics=True)
        position = np.array(state[0])
        rotation = np.array(self.p.getMatrixFromQuaternion(state[1])).reshape(3, 3)
        return self.p.computeViewMatrix(position, position + rotation[:, 1], -rotation[:, 2])

"""CALVIN's two cameras (calvin_env `camera/*`, `conf/cameras/cameras/{static,gripper}.yaml`).

The static camera is fixed (200x200, fov 10 deg); the gripper camera rides on the `gripper_cam`
link (84x84, fov 75 deg) looking along the link's y axis with -z up. Both render with pybullet's
CPU TinyRenderer. Depth is metric: `far * near / (far - (far - near) * zbuffer)`.

Layered static camera (`LayeredStaticCamera`): TinyRenderer has no shadows by default and no
back-face culling, and a triangle costs its whole screen bounding box, so the big desk and floor
dominate a 200x200 frame although they rarely change. The frame is split in two layers composited
by depth: the *scene* layer (everything but the robot and the blocks) is rendered only when the
desk's joints or lights change (`scene_key`), with the robot and blocks hidden by alpha 0 (which
TinyRenderer skips); the *moving* layer (robot and blocks) is rendered every frame from copies of
those bodies kept in a private scratch client. Per-pixel shading does not depend on other objects,
so the composite equals a full render (tests compare them).
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

    def close(self) -> None:  # noqa: B027  (a hook: only the layered camera holds a resource)
        """Release what the camera holds besides the env's client (nothing by default)."""

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

    def __init__(self, client: Any) -> None:
        """Eye, target and up vector from CALVIN's static.yaml."""
        config = _config("static")
        super().__init__(client, config)
        self._view = client.computeViewMatrix(cameraEyePosition=config["look_from"],
                                              cameraTargetPosition=config["look_at"],
                                              cameraUpVector=config["up_vector"])

    def view_matrix(self) -> list[float]:
        """Fixed view."""
        return self._view


class LayeredStaticCamera(StaticCamera):
    """The static camera rendered as a cached scene layer plus a per-frame moving layer (same images)."""

    def __init__(self, client: Any, moving: list[int], load_copies: Callable[[Any], list[int]],
                 scene_key: Callable[[], tuple]) -> None:
        """Set up the scratch client of the moving layer.

        Args:
            client: the env's pybullet client.
            moving: uids of the bodies that move every step (robot, blocks); each link one colour.
            load_copies: loads the same bodies into a given client, returning their uids in order.
            scene_key: a value that changes whenever anything else visible changes.
        """
        super().__init__(client)
        self._moving = {(uid, link): self._colour(uid, link) for uid in moving for link in self._links(client, uid)}
        self._scratch = direct_client()
        copies = load_copies(self._scratch)
        self._copies = [(uid, copy, self._movable_joints(uid)) for uid, copy in zip(moving, copies, strict=True)]
        self._moving_camera = StaticCamera(self._scratch)
        self._scene_key, self._key = scene_key, None
        self._scene: tuple[np.ndarray, np.ndarray] | None = None

    @staticmethod
    def _links(client: Any, uid: int) -> list[int]:
        return sorted({s[1] for s in client.getVisualShapeData(uid)})

    def _colour(self, uid: int, link: int) -> tuple[float, ...]:
        colours = {tuple(s[7]) for s in self.p.getVisualShapeData(uid) if s[1] == link}
        if len(colours) != 1:
            raise ValueError(f"moving body {uid} link {link}: visuals must share one colour, got {colours}")
        return colours.pop()

    def _movable_joints(self, uid: int) -> list[int]:
        fixed = self.p.JOINT_FIXED
        return [j for j in range(self.p.getNumJoints(uid)) if self.p.getJointInfo(uid, j)[2] != fixed]

    def _render_scene_layer(self) -> tuple[np.ndarray, np.ndarray]:
        for uid, link in self._moving:
            self.p.changeVisualShape(uid, link, rgbaColor=[0, 0, 0, 0])
        try:
            return self._render_buffers()
        finally:
            for (uid, link), colour in self._moving.items():
                self.p.changeVisualShape(uid, link, rgbaColor=colour)

    def _sync_copies(self) -> None:
        p, scratch = self.p, self._scratch
        for uid, copy, joints in self._copies:
            scratch.resetBasePositionAndOrientation(copy, *p.getBasePositionAndOrientation(uid))
            for joint, state in zip(joints, p.getJointStates(uid, joints) if joints else [], strict=True):
                scratch.resetJointState(copy, joint, state[0])

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """RGB (200, 200, 3) uint8 and metric depth (200, 200) float32 of the current scene."""
        key = self._scene_key()
        if self._scene is None or key != self._key:
            self._scene, self._key = self._render_scene_layer(), key
        self._sync_copies()
        rgb, z = self._moving_camera._render_buffers()
        scene_rgb, scene_z = self._scene
        front = z < scene_z
        return np.where(front[..., None], rgb, scene_rgb), self._metric(np.where(front, z, scene_z))

    def close(self) -> None:
        """Disconnect the scratch client."""
        self._scratch.disconnect()


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

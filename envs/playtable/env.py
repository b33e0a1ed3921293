"""PlayTableEnv: our pybullet re-creation of CALVIN's `PlayTableSimEnv`, same surface and dynamics.

240 Hz physics, 30 Hz control (8 physics steps per `step`), CALVIN's robot control law, desk,
blocks, cameras, `get_obs()` and `get_info()` dicts (see `envs/base.py`). Differences from CALVIN,
all deliberate: a reset writes the state and runs collision detection instead of one physics step,
so `reset(scene_obs=s).scene_obs == s` exactly and contacts are valid at once; a reset also
restores the physics engine's internal state saved at load, so a rollout depends only on its reset
state and actions; an absolute action also becomes the commanded target for later relative ones;
`cameras=False` gives a state-only env (empty `rgb_obs`/`depth_obs`) for scripted experts.

Example:
    env = PlayTableEnv("D")
    obs = env.reset(robot_obs, scene_obs)
    obs, _, _, info = env.step(np.array([0, 0, -1, 0, 0, 0, 1.0]))  # 2 cm down, gripper open
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.playtable.bullet import direct_client
from envs.playtable.cameras import GripperCamera, LayeredStaticCamera, StaticCamera
from envs.playtable.layout import load_layout
from envs.playtable.robot import GRIPPER_CAM_LINK, ROBOT_OBS_LABELS, PandaRobot
from envs.playtable.scene import BUTTON, DOORS, SWITCH, PlayTableScene, create_blocks

PHYSICS_HZ, CONTROL_HZ = 240, 30
ACTION_REPEAT = PHYSICS_HZ // CONTROL_HZ


def parse_action(action: Any) -> tuple[str, np.ndarray, np.ndarray, int]:
    """Validate a CALVIN action.

    Args:
        action: a relative action (7,) -- xyz and euler deltas (x 0.02 m, x 0.05 rad), gripper -- or
            an absolute `(position (3,), euler (3,) or quaternion xyzw (4,), gripper)` tuple.

    Returns:
        ("relative", deltas (6,), zeros (0,), gripper) or ("absolute", position, orientation, gripper).

    Raises:
        ValueError: wrong length, non-finite values, or a gripper that is not exactly -1 or 1.
    """
    if isinstance(action, tuple | list) and len(action) == 3:
        position, orientation = np.asarray(action[0], dtype=float), np.asarray(action[1], dtype=float)
        gripper = np.asarray(action[2], dtype=float).reshape(-1)
        if position.shape != (3,) or orientation.shape not in ((3,), (4,)) or gripper.shape != (1,):
            raise ValueError(f"action: an absolute action is (position (3,), euler (3,) or quaternion (4,), "
                             f"gripper), got shapes {position.shape}, {orientation.shape}, {gripper.shape}")
        kind, values = "absolute", np.concatenate([position, orientation, gripper])
    else:
        values = np.asarray(action, dtype=float)
        if values.shape != (7,):
            raise ValueError(f"action: expected a relative action of shape (7,) or an absolute "
                             f"(position, orientation, gripper) tuple, got shape {values.shape}")
        kind = "relative"
    if not np.all(np.isfinite(values)):
        raise ValueError(f"action: must be finite, got {values.tolist()}")
    if values[-1] not in (-1.0, 1.0):
        raise ValueError(f"action gripper: must be exactly -1 (close) or 1 (open), got {values[-1]}")
    if kind == "relative":
        return kind, values[:6], np.zeros(0), int(values[6])
    return kind, values[:3], values[3:-1], int(values[-1])


class PlayTableEnv:
    """CALVIN's PlayTable scene A, B, C or D on a private pybullet client (several per process are fine)."""

    def __init__(self, scene: str = "D", *, cameras: bool = True, seed: int = 0, low_poly: bool = True,
                 render_cache: bool = True) -> None:
        """Build the simulator.

        Args:
            scene: CALVIN scene preset ("A", "B", "C", "D"); ABC->D trains on A-C and evaluates on D.
            cameras: render `rgb_static`/`rgb_gripper` and depths; False = state-only, much faster.
            seed: seeds the block placement of argument-less resets.
            low_poly: robot visuals are convex hulls of its collision meshes (False: the detailed
                meshes as in CALVIN, ~20 ms slower per render; for the benchmark baseline).
            render_cache: render the static camera in two layers, the desk only when it changes
                (same images; False renders every frame in full, for the benchmark baseline and tests).
        """
        self.layout = load_layout(scene)
        self.p = direct_client()
        self.p.setPhysicsEngineParameter(deterministicOverlappingPairs=1)
        self.p.setTimeStep(1.0 / PHYSICS_HZ)
        self.p.setGravity(0, 0, -9.8)
        self.rng = np.random.default_rng(seed)
        self.robot = PandaRobot(self.p, self.layout.robot_base_position, self.layout.robot_base_orientation,
                                self.layout.robot_initial_joint_positions, low_poly=low_poly)
        self.robot.load()
        self.scene = PlayTableScene(self.p, self.layout, self.rng)
        self.scene.load()
        static = self._static_camera() if render_cache else StaticCamera(self.p)
        self.cameras = [static, GripperCamera(self.p, self.robot.uid, GRIPPER_CAM_LINK)] if cameras else []
        self._initial_state = self.p.saveState()
        self._closed = False
        self.reset()

    def _static_camera(self) -> LayeredStaticCamera:
        def load_copies(client: Any) -> list[int]:
            return [self.robot.load_arm(client), *create_blocks(client, self.layout)]

        moving = [self.robot.uid, *self.scene.block_uids.values()]
        return LayeredStaticCamera(self.p, moving, load_copies, self.scene.visual_key)

    @property
    def robot_obs_labels(self) -> tuple[str, ...]:
        """Names of the 15 `robot_obs` entries."""
        return ROBOT_OBS_LABELS

    @property
    def scene_obs_labels(self) -> tuple[str, ...]:
        """Names of the 24 `scene_obs` entries; the block order is the scene's `movable_objects` order."""
        blocks = [f"{name}_{axis}" for name in self.scene.block_names for axis in ("x", "y", "z", "rx", "ry", "rz")]
        return (*DOORS, BUTTON, SWITCH, "lightbulb", "led", *blocks)

    def reset(self, robot_obs: np.ndarray | None = None, scene_obs: np.ndarray | None = None) -> dict:
        """Set the robot (15,) and scene (24,) state, or the initial pose and sampled blocks; return `get_obs()`."""
        if robot_obs is not None:
            robot_obs = np.asarray(robot_obs, dtype=np.float64)
            if robot_obs.shape != (15,) or not np.all(np.isfinite(robot_obs)):
                raise ValueError(f"robot_obs: expected 15 finite values, got shape {robot_obs.shape}")
        self.p.restoreState(self._initial_state)
        self.scene.reset(scene_obs)
        self.robot.reset(robot_obs)
        self.p.performCollisionDetection()
        return self.get_obs()

    def step(self, action: Any) -> tuple[dict, int, bool, dict]:
        """Apply one 30 Hz control step; returns CALVIN's `(obs, 0, False, info)`."""
        kind, first, second, gripper = parse_action(action)
        if kind == "relative":
            position, orientation, _ = self.robot.relative_to_absolute(np.append(first, gripper))
        else:
            position, orientation = first, second
            quat = orientation if len(orientation) == 4 else self.p.getQuaternionFromEuler(orientation)
            self.robot.target_pos = position.copy()
            self.robot.target_orn = np.array(self.p.getEulerFromQuaternion(quat))
        self.robot.apply_action(position, orientation, gripper)
        for _ in range(ACTION_REPEAT):
            self.p.stepSimulation()
        self.scene.step()
        return self.get_obs(), 0, False, self.get_info()

    def get_obs(self) -> dict:
        """`{"rgb_obs": {...}, "depth_obs": {...}, "robot_obs": (15,), "scene_obs": (24,)}` (see envs/base.py)."""
        rgb_obs, depth_obs = {}, {}
        for camera in self.cameras:
            rgb_obs[f"rgb_{camera.name}"], depth_obs[f"depth_{camera.name}"] = camera.render()
        robot_obs, _ = self.robot.get_observation()
        return {"rgb_obs": rgb_obs, "depth_obs": depth_obs, "robot_obs": robot_obs, "scene_obs": self.scene.get_obs()}

    def get_info(self) -> dict:
        """CALVIN's info: `{"robot_info": {...}, "scene_info": {...}}`, the task oracle's input."""
        _, robot_info = self.robot.get_observation()
        return {"robot_info": robot_info, "scene_info": self.scene.get_info()}

    def render(self) -> np.ndarray:
        """The static camera's RGB (200, 200, 3) uint8, also in state-only mode."""
        return StaticCamera(self.p).render()[0]

    def close(self) -> None:
        """Disconnect the physics client (idempotent)."""
        if not self._closed:
            self._closed = True
            for camera in self.cameras:
                camera.close()
            self.p.disconnect()

    def __enter__(self) -> PlayTableEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The desk, its switches and lights, and the three blocks (calvin_env `scene/play_table_scene.py`).

`scene_obs` (24,) is CALVIN's: [0] base__slide, [1] base__drawer, [2] base__button, [3] base__switch
(joint positions, world m), [4] lightbulb, [5] led (0/1), then position (3) + euler xyz (3) of each
block **in the scene YAML's `movable_objects` order** (`block_names`): red, blue, pink in B and D,
but pink, blue, red in A and blue, red, pink in C (CALVIN's own gotcha, kept so data lines up).

Button and switch logic (`step`, after every physics step batch): the button toggles the green LED
on the rising edge of its joint past 0.01 m and springs back (position motor, 4 N); the switch
lights the bulb while its joint is above 0.044 m; doors and switch hold position against a 4 N
velocity motor. Methods `block_pose`, `link_pose`, `handle_position` and `joint_direction` are the
documented way for waypoint controllers to find things.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.playtable.layout import (
    BLOCK_LATERAL_FRICTION,
    BLOCK_MASS,
    BLOCK_SPINNING_FRICTION,
    DATA_DIR,
    DOOR_WIDTH,
    DRAWER_FRONT,
    GLOBAL_SCALING,
    SceneLayout,
)

DOORS = ("base__slide", "base__drawer")
BUTTON, SWITCH = "base__button", "base__switch"
LIGHTS = {"lightbulb": ("light_link", (1.0, 1.0, 0.0, 1.0)), "led": ("led_link", (0.0, 1.0, 0.0, 1.0))}
LIGHT_OFF = (1.0, 1.0, 1.0, 1.0)
# m: the joints' soft limits let a pressed button / pushed switch or door go past them under contact (the
# collected data reaches 2.6 mm); a recorded state that far out is clipped into the range, farther is refused
JOINT_SLACK = 0.005
MOTOR_FORCE = 4.0  # N, CALVIN's MAX_FORCE for doors, button spring and switch
TABLE_LINKS = {"button_link": 0, "switch_link": 1, "slide_link": 2, "drawer_link": 3, "led_link": 4,
               "light_link": 5, "plank_link": 6, "base_link": -1}
# Interaction points in each joint's own frame (URDF units): door and drawer handle centres, the
# button's top face, the middle of the switch lever's outer half (see desk.py for the geometry).
_HANDLES = {"base__slide": (DOOR_WIDTH / 2, 0.0, 0.025), "base__drawer": (0.0, 0.08, DRAWER_FRONT + 0.02),
            BUTTON: (0.0, 0.03, 0.0), SWITCH: (0.0, 0.045, 0.0)}
MAX_PLACEMENT_TRIES = 1000
FLOOR_HALF = 3.0  # m


def load_desk(client: Any, layout: SceneLayout) -> tuple[int, int]:
    """Load the floor and the desk of `layout` into `client`; return their uids."""
    # One quad (2 triangles): TinyRenderer draws both faces of every triangle, a box floor costs 6x.
    corners = [[-FLOOR_HALF, -FLOOR_HALF, 0], [FLOOR_HALF, -FLOOR_HALF, 0], [FLOOR_HALF, FLOOR_HALF, 0],
               [-FLOOR_HALF, FLOOR_HALF, 0]]
    floor_look = client.createVisualShape(client.GEOM_MESH, vertices=corners, indices=[0, 1, 2, 0, 2, 3],
                                          normals=[[0, 0, 1]] * 4, rgbaColor=layout.palette.floor)
    floor_uid = client.createMultiBody(0, client.createCollisionShape(client.GEOM_PLANE), floor_look)
    table_uid = client.loadURDF(str(DATA_DIR / f"desk_{layout.name}.urdf"), [0, 0, 0], [0, 0, 0, 1],
                                useFixedBase=True, globalScaling=GLOBAL_SCALING)
    return floor_uid, table_uid


def create_blocks(client: Any, layout: SceneLayout) -> list[int]:
    """CALVIN's blocks of `layout` (1 kg boxes at 0.8 scale, friction 0.7), in `movable_objects` order.

    pybullet derives a URDF block's inertia from its box (CALVIN's URDF inertia is not used), so a
    created box is dynamically identical to CALVIN's block URDF.
    """
    uids = []
    for block in layout.blocks:
        half = [GLOBAL_SCALING * s / 2 for s in block.size]
        uid = client.createMultiBody(BLOCK_MASS, client.createCollisionShape(client.GEOM_BOX, halfExtents=half),
                                     client.createVisualShape(client.GEOM_BOX, halfExtents=half, rgbaColor=block.rgba))
        client.changeDynamics(uid, -1, lateralFriction=BLOCK_LATERAL_FRICTION, spinningFriction=BLOCK_SPINNING_FRICTION)
        uids.append(uid)
    return uids


class PlayTableScene:
    """Scene state on one pybullet client; `layout` is the scene preset (`layout.load_layout`)."""

    def __init__(self, client: Any, layout: SceneLayout, rng: np.random.Generator) -> None:
        """Bind to a `BulletClient`; `rng` samples block poses on an argument-less `reset`."""
        self.p, self.layout, self.rng = client, layout, rng
        self.block_names = tuple(block.name for block in layout.blocks)
        self.table_uid = self.floor_uid = -1
        self.block_uids: dict[str, int] = {}
        self.joint_ids: dict[str, int] = {}
        self.lights = {name: 0 for name in LIGHTS}
        self.button_state = 0
        self._button_was_pressed = False
        self.switch_state = 0

    def load(self) -> None:
        """Load the floor, the desk URDF (fixed, 0.8 scale), the blocks, and set the joint motors."""
        p = self.p
        self.floor_uid, self.table_uid = load_desk(p, self.layout)
        joints = range(p.getNumJoints(self.table_uid))
        self.joint_ids = {p.getJointInfo(self.table_uid, i)[1].decode(): i for i in joints}
        for name in (*DOORS, SWITCH):
            p.setJointMotorControl2(self.table_uid, self.joint_ids[name], p.VELOCITY_CONTROL, force=MOTOR_FORCE)
        p.setJointMotorControl2(self.table_uid, self.joint_ids[BUTTON], p.POSITION_CONTROL, targetPosition=0.0,
                                force=MOTOR_FORCE)
        self.block_uids = dict(zip(self.block_names, create_blocks(p, self.layout), strict=True))

    def visual_key(self) -> tuple:
        """Changes whenever the desk looks different: its joints (to 1 um) and its lights."""
        joints = tuple(round(self.joint_state(name), 6) for name in (*DOORS, BUTTON, SWITCH))
        return joints + (self.lights["lightbulb"], self.lights["led"])

    # ------------------------------------------------------------------ state

    def reset(self, scene_obs: np.ndarray | None = None) -> None:
        """Write `scene_obs` (24,) into the simulator, or reset joints to 0, lights off, blocks sampled.

        Raises:
            ValueError: a joint more than JOINT_SLACK outside its range (closer ones are clipped), a light
                not 0/1, or a lightbulb that disagrees with the switch (the bulb is on exactly while the
                switch is above its threshold).
        """
        if scene_obs is None:
            scene_obs = np.zeros(24)
            scene_obs[6:] = self._sample_block_poses()
        scene_obs = self._checked(scene_obs)
        p = self.p
        for index, name in enumerate((*DOORS, BUTTON, SWITCH)):
            p.resetJointState(self.table_uid, self.joint_ids[name], scene_obs[index])
        for name, value in zip(("lightbulb", "led"), scene_obs[4:6], strict=True):
            self._set_light(name, int(value))
        self.button_state = self.lights["led"]
        self._button_was_pressed = self._button_pressed()
        self.switch_state = int(self._switch_on())
        for k, name in enumerate(self.block_names):
            pose = scene_obs[6 + 6 * k: 12 + 6 * k]
            p.resetBasePositionAndOrientation(self.block_uids[name], pose[:3], p.getQuaternionFromEuler(pose[3:]))
            p.resetBaseVelocity(self.block_uids[name], [0, 0, 0], [0, 0, 0])

    def _checked(self, scene_obs: np.ndarray) -> np.ndarray:
        scene_obs = np.asarray(scene_obs, dtype=np.float64)
        if scene_obs.shape != (24,) or not np.all(np.isfinite(scene_obs)):
            raise ValueError(f"scene_obs: expected 24 finite values, got shape {scene_obs.shape}")
        scene_obs = scene_obs.copy()
        for index, name in enumerate((*DOORS, BUTTON, SWITCH)):
            low, high = self.joint_range(name)
            if not low - JOINT_SLACK <= scene_obs[index] <= high + JOINT_SLACK:
                raise ValueError(f"scene_obs[{index}] ({name}): {scene_obs[index]} outside [{low:.4g}, {high:.4g}]")
            if not low - 1e-6 <= scene_obs[index] <= high + 1e-6:  # (values at a limit's float rounding stay)
                scene_obs[index] = np.clip(scene_obs[index], low, high)
        for index, name in ((4, "lightbulb"), (5, "led")):
            if scene_obs[index] not in (0.0, 1.0):
                raise ValueError(f"scene_obs[{index}] ({name}): must be 0 or 1, got {scene_obs[index]}")
        switch_on = scene_obs[3] > sum(self.joint_range(SWITCH)) / 2
        if bool(scene_obs[4]) != switch_on:
            raise ValueError(f"scene_obs[4] (lightbulb) is {scene_obs[4]:g} but the switch (scene_obs[3] = "
                             f"{scene_obs[3]:.4g}) is {'on' if switch_on else 'off'}: the bulb follows the switch")
        return scene_obs

    def _sample_block_poses(self) -> np.ndarray:
        """CALVIN's `reset_movable_objects`: each block on a random surface, random yaw, no block overlaps."""
        p, surfaces = self.p, list(self.layout.surfaces.values())
        for _ in range(MAX_PLACEMENT_TRIES):
            poses = []
            for name in self.block_names:
                low, high = surfaces[self.rng.integers(len(surfaces))]
                pose = np.concatenate([self.rng.uniform(low, high), [0.0, 0.0, self.rng.uniform(-np.pi, np.pi)]])
                p.resetBasePositionAndOrientation(self.block_uids[name], pose[:3], p.getQuaternionFromEuler(pose[3:]))
                poses.append(pose)
            p.performCollisionDetection()
            uids = list(self.block_uids.values())
            if not any(p.getContactPoints(a, b) for i, a in enumerate(uids) for b in uids[i + 1:]):
                return np.concatenate(poses)
        raise RuntimeError(f"scene {self.layout.name}: no overlap-free block placement in {MAX_PLACEMENT_TRIES} tries")

    def step(self) -> None:
        """Update the button toggle (rising edge) and the switch level, and recolour the lights."""
        pressed = self._button_pressed()
        if pressed and not self._button_was_pressed:
            self.button_state = 1 - self.button_state
            self._set_light("led", self.button_state)
        self._button_was_pressed = pressed
        self.switch_state = int(self._switch_on())
        if self.lights["lightbulb"] != self.switch_state:
            self._set_light("lightbulb", self.switch_state)

    def _button_pressed(self) -> bool:
        return self.joint_state(BUTTON) > sum(self.joint_range(BUTTON)) / 2

    def _switch_on(self) -> bool:
        return self.joint_state(SWITCH) > sum(self.joint_range(SWITCH)) / 2

    def _set_light(self, name: str, state: int) -> None:
        link, colour = LIGHTS[name]
        self.lights[name] = state
        self.p.changeVisualShape(self.table_uid, TABLE_LINKS[link], rgbaColor=colour if state else LIGHT_OFF)

    # ------------------------------------------------------------------ observation

    def joint_state(self, name: str) -> float:
        """Current position of a desk joint (world m)."""
        return float(self.p.getJointState(self.table_uid, self.joint_ids[name])[0])

    def joint_range(self, name: str) -> tuple[float, float]:
        """World range of a desk joint (CALVIN's URDF limits x 0.8)."""
        info = self.p.getJointInfo(self.table_uid, self.joint_ids[name])
        return float(info[8]), float(info[9])

    def get_obs(self) -> np.ndarray:
        """CALVIN's `scene_obs` (24,) float64 (see the module docstring for the layout)."""
        p = self.p
        values = [self.joint_state(name) for name in (*DOORS, BUTTON, SWITCH)]
        values += [float(self.lights["lightbulb"]), float(self.lights["led"])]
        for name in self.block_names:
            pos, orn = p.getBasePositionAndOrientation(self.block_uids[name])
            values += [*pos, *p.getEulerFromQuaternion(orn)]
        return np.array(values, dtype=np.float64)

    def get_info(self) -> dict:
        """CALVIN's `scene_info`: fixed_objects, movable_objects, doors, buttons, switches, lights."""
        p = self.p
        movable = {}
        for name in self.block_names:
            uid = self.block_uids[name]
            pos, orn = p.getBasePositionAndOrientation(uid)
            lin_vel, ang_vel = p.getBaseVelocity(uid)
            movable[name] = {"current_pos": pos, "current_orn": orn, "current_lin_vel": lin_vel,
                             "current_ang_vel": ang_vel, "contacts": p.getContactPoints(bodyA=uid), "uid": uid}
        return {
            "fixed_objects": {"table": {"uid": self.table_uid, "links": dict(TABLE_LINKS),
                                        "contacts": p.getContactPoints(bodyA=self.table_uid)}},
            "movable_objects": movable,
            "doors": {name: {"current_state": self.joint_state(name)} for name in DOORS},
            "buttons": {BUTTON: {"joint_state": self.joint_state(BUTTON), "logical_state": self.button_state}},
            "switches": {SWITCH: {"joint_state": self.joint_state(SWITCH), "logical_state": self.switch_state}},
            "lights": {name: {"logical_state": state} for name, state in self.lights.items()},
        }

    def block_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and quaternion xyzw (4,) of block `name` (e.g. "block_red")."""
        pos, orn = self.p.getBasePositionAndOrientation(self.block_uids[name])
        return np.array(pos), np.array(orn)

    def link_pose(self, link: str) -> tuple[np.ndarray, np.ndarray]:
        """World pose of a desk link frame (`TABLE_LINKS` names), i.e. its joint frame moved by the joint."""
        if link == "base_link":
            pos, orn = self.p.getBasePositionAndOrientation(self.table_uid)
            return np.array(pos), np.array(orn)
        state = self.p.getLinkState(self.table_uid, TABLE_LINKS[link], computeForwardKinematics=True)
        return np.array(state[4]), np.array(state[5])

    def handle_position(self, joint: str) -> np.ndarray:
        """World point to grasp or push for a joint: door/drawer handle centre, button top, switch lever."""
        link = self.p.getJointInfo(self.table_uid, self.joint_ids[joint])[12].decode()
        pos, orn = self.link_pose(link)
        rotation = np.array(self.p.getMatrixFromQuaternion(orn)).reshape(3, 3)
        return pos + rotation @ (GLOBAL_SCALING * np.array(_HANDLES[joint]))

    def joint_direction(self, joint: str) -> np.ndarray:
        """World unit vector along which the joint's value increases (e.g. the drawer opens)."""
        info = self.p.getJointInfo(self.table_uid, self.joint_ids[joint])
        _, orn = self.link_pose(info[12].decode())
        return np.array(self.p.getMatrixFromQuaternion(orn)).reshape(3, 3) @ np.array(info[13])

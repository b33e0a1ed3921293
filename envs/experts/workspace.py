"""The privileged view of a PlayTable scene that the scripted experts plan from.

An expert is privileged: it reads block poses, desk joint states and contacts through the scene's
documented methods (`PlayTableScene.block_pose`, `link_pose`, `handle_position`, `joint_direction`,
`joint_state`) and the robot's commanded TCP target, but it acts only through relative actions.
`Workspace` turns those reads into the places a plan needs: where a block is and how to grasp it,
where the free part of the shelf and of the open drawer are, and which block the gripper holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.playtable.desk import CABINET_FRONT_Y, TABLE_FRONT_Y, TABLE_TOP_Z
from envs.playtable.layout import DOOR_WIDTH, DRAWER_FRONT, GLOBAL_SCALING
from envs.playtable.scene import TABLE_LINKS

COLORS = ("red", "blue", "pink")
BLOCK_HALF_HEIGHT = 0.02  # m, every block is 5 cm high in its URDF, x 0.8
TABLE_Z = TABLE_TOP_Z * GLOBAL_SCALING  # m, table top
TABLE_EDGE_Y = TABLE_FRONT_Y * GLOBAL_SCALING  # m, front edge of the table top (over the drawer)
SHELF_Y = 0.085  # m, where blocks are put on the shelf: in front of the cabinet's top board
SHELF_MAX_Y = 0.15 * GLOBAL_SCALING - 0.025  # m, the top board's front edge, minus a hand's half-thickness
REACH_LEAN_START, REACH_LEAN_GAIN, REACH_LEAN_MAX = 0.68, 3.0, 0.45  # m, rad/m, rad
SET_DOWN_CLEARANCE = 0.13  # m, centre distance kept from other blocks when setting a block down
BUTTON_CLEARANCE = 0.05  # m, extra room kept around the button when choosing where to set a block down
DRAWER_INNER_HALF_WIDTH = 0.2  # m, half the drawer's inner x extent (0.275 URDF less its walls, x 0.8)


@dataclass(frozen=True)
class BlockView:
    """A block as a plan sees it: centre (3,), yaw (rad, world z), length (m, its long side) and uid."""

    color: str
    position: np.ndarray
    yaw: float
    length: float
    uid: int

    @property
    def cube(self) -> bool:
        """The small block is a cube: it can be grasped across either side."""
        return self.length < 0.045


class Workspace:
    """Read-only access to one `PlayTableEnv`'s scene and robot for planning."""

    def __init__(self, env: object) -> None:
        """Bind to a `PlayTableEnv` or an `envs.calvin.CalvinEnv` (its `scene`, `robot`, `p` and `layout`)."""
        self.env = env
        self.scene, self.robot, self.p = env.scene, env.robot, env.p
        self.sizes = {block.name: GLOBAL_SCALING * np.array(block.size) for block in env.layout.blocks}
        slide = env.layout.joints["base__slide"]
        x0 = slide.xyz[0] * GLOBAL_SCALING
        # The shelf opening is the door's travel: the door (DOOR_WIDTH) covers part of it.
        self.shelf_x = (x0 - slide.upper * GLOBAL_SCALING, x0 + DOOR_WIDTH * GLOBAL_SCALING)
        self.robot_base = np.array(env.layout.robot_base_position[:2], dtype=float)

    def reach_lean(self, position: np.ndarray) -> np.ndarray:
        """Tilt (x, y) for `motion.down`: lean the fingertips away from the robot's base at the far end of its reach.

        Pointing straight down, the TCP misses targets more than ~0.7 m (horizontally) from the base
        by centimetres; leaning the tool brings the wrist back within reach.
        """
        offset = np.asarray(position[:2], dtype=float) - self.robot_base
        distance = float(np.linalg.norm(offset))
        return offset / distance * float(np.clip((distance - REACH_LEAN_START) * REACH_LEAN_GAIN, 0.0, REACH_LEAN_MAX))

    # ------------------------------------------------------------------ blocks

    def block(self, color: str) -> BlockView:
        """Pose and size of the block of `color` ("red", "blue", "pink")."""
        name = f"block_{color}"
        position, quaternion = self.scene.block_pose(name)
        yaw = self.p.getEulerFromQuaternion(quaternion)[2]
        return BlockView(color, position, float(yaw), float(self.sizes[name][0]), self.scene.block_uids[name])

    def blocks(self) -> list[BlockView]:
        """All three blocks."""
        return [self.block(color) for color in COLORS]

    def free_table_spot(self) -> np.ndarray:
        """A table point (x, y) to set a block down: clear of the other blocks and the button, near the middle.

        Candidates cover the scene's block-sampling area of the table (CALVIN's `surfaces.table`);
        of those at least `SET_DOWN_CLEARANCE` from the other blocks (or the clearest, if none is),
        the one nearest the area's middle wins: corners are at the edge of the arm's reach. The
        button counts as `BUTTON_CLEARANCE` closer than it is: a block pushed into it stops short.
        """
        (x0, y0, _), (x1, y1, _) = self.env.layout.surfaces["table"]
        xs, ys = np.meshgrid(np.linspace(x0, x1, 15), np.linspace(y0, y1, 5))
        spots = np.stack([xs.ravel(), ys.ravel()], axis=1)
        held = self.held_block()
        blocks = [b.position[:2] for b in self.blocks() if held is None or b.uid != held.uid]
        distance = np.min([np.linalg.norm(spots - o, axis=1) for o in blocks], axis=0)
        button = np.linalg.norm(spots - self.handle("base__button")[:2], axis=1) - BUTTON_CLEARANCE
        clearance = np.minimum(distance, button)
        free = spots[clearance >= min(SET_DOWN_CLEARANCE, clearance.max())]
        middle = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        return free[np.argmin(np.linalg.norm(free - middle, axis=1))]

    def contacts(self, uid: int) -> set[tuple[int, int]]:
        """(body, link) pairs touching body `uid` now."""
        return {(c[2], c[4]) for c in self.p.getContactPoints(bodyA=uid)}

    def held_block(self) -> BlockView | None:
        """The block between closed fingers (touching the robot while the gripper is commanded closed), if any."""
        if self.robot.gripper_action > 0:
            return None
        for block in self.blocks():
            if any(body == self.robot.uid for body, _ in self.contacts(block.uid)):
                return block
        return None

    def grip_offset(self, held: BlockView, turn: float = 0.0) -> np.ndarray:
        """TCP minus the held block's centre (3,) after the wrist turns by `turn`: add it to a block goal.

        A block is rarely held exactly at its centre (a long block on the shelf is taken near its front).
        """
        offset = np.asarray(self.robot.tcp_pose()[0]) - held.position
        c, s = np.cos(turn), np.sin(turn)
        return np.array([c * offset[0] - s * offset[1], s * offset[0] + c * offset[1], offset[2]])

    def bottom_below_tcp(self, block: BlockView) -> float:
        """How far the block's lowest point is below the TCP now (m; its AABB, so any tilt counts)."""
        return float(self.robot.tcp_pose()[0][2] - self.p.getAABB(block.uid)[0][2])

    def top(self, block: BlockView) -> float:
        """World z of the block's highest point (its AABB top)."""
        return float(self.p.getAABB(block.uid)[1][2])

    def support(self, block: BlockView) -> str:
        """What `block` rests on: "table", "shelf", "drawer", "block", "robot" or "none"."""
        table = self.scene.table_uid
        contacts = self.contacts(block.uid)
        bodies = {body for body, _ in contacts}
        links = {link for body, link in contacts if body == table}
        others = {b.uid for b in self.blocks()} - {block.uid}
        if self.robot.uid in bodies and not links and not bodies & others:
            return "robot"
        for name, surface in (("plank_link", "shelf"), ("drawer_link", "drawer"), ("base_link", "table")):
            if TABLE_LINKS[name] in links:
                return surface
        return "block" if bodies & others else "none"

    # ------------------------------------------------------------------ desk

    def joint(self, name: str) -> float:
        """A desk joint's position (world m)."""
        return self.scene.joint_state(name)

    def joint_range(self, name: str) -> tuple[float, float]:
        """A desk joint's world range."""
        return self.scene.joint_range(name)

    def handle(self, name: str) -> np.ndarray:
        """The point to grasp or push for a desk joint (see `PlayTableScene.handle_position`)."""
        return self.scene.handle_position(name)

    def direction(self, name: str) -> np.ndarray:
        """World unit vector along which a desk joint's value grows."""
        return self.scene.joint_direction(name)

    def door_span(self) -> tuple[float, float]:
        """World x interval the sliding door covers now."""
        x = self.scene.link_pose("slide_link")[0][0]
        return x, x + DOOR_WIDTH * GLOBAL_SCALING

    def shelf_top(self) -> float:
        """World z of the shelf (plank) top: the AABB top of `plank_link`."""
        return float(self.p.getAABB(self.scene.table_uid, TABLE_LINKS["plank_link"])[1][2])

    def drawer_floor(self) -> float:
        """World z of the drawer's floor top (the floor board is 1 cm thick in the URDF)."""
        return float(self.scene.link_pose("drawer_link")[0][2] + 0.01 * GLOBAL_SCALING)

    def drawer_free_y(self) -> tuple[float, float]:
        """World y interval of the drawer's inside that is in front of the table top (reachable from above)."""
        origin_y = self.scene.link_pose("drawer_link")[0][1]
        front = origin_y - (DRAWER_FRONT - 0.02) * GLOBAL_SCALING
        return front, TABLE_EDGE_Y

    def drawer_x(self) -> float:
        """World x of the drawer's centre line."""
        return float(self.scene.link_pose("drawer_link")[0][0])

    def cabinet_front_y(self) -> float:
        """World y of the cabinet's lower front (where the table top meets the shelf)."""
        return CABINET_FRONT_Y * GLOBAL_SCALING

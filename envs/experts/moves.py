"""Moves every expert plan shares: get a free hand, transit at a safe height, set a block down.

Plans start from wherever the previous task left the robot, and in CALVIN's protocol that is the
moment the oracle saw success, often mid-motion: fingers around the drawer handle, in the cabinet
after placing a block, or still holding a block just lifted off a stack. `free_hand` brings any
of those back to a free, downward-pointing gripper above the desk.
"""

from __future__ import annotations

import numpy as np

from envs.experts.motion import CLOSE, OPEN, SPEEDS, YAW_LIMITS, Motion, Plan, euler_to_matrix
from envs.experts.workspace import TABLE_Z, BlockView, Workspace

SAFE_Z = 0.58  # m, TCP height for transit over the table and the shelf
FINGER_HALF_THICKNESS = 0.018  # m, closed fingers' half extent across their closing axis
FINGERTIP_BELOW_TCP = 0.008  # m, CALVIN's fingertips reach 8 mm beyond the TCP
RELEASE_GAP = 0.006  # m, a placed block is let go this far above its support
BACK_OFF = 0.06  # m, retreat along the tool axis when it points sideways (drawer handle)


def transit(ws: Workspace, m: Motion, goal: np.ndarray, orientation: np.ndarray, gripper: float, *,
            z: float = SAFE_Z) -> Plan:
    """Go over `goal` through the safe height: rise to `z` where the TCP is, then across at that height.

    Sideways moves happen in front of the cabinet: the sliding door leans over the shelf, so a hand
    crossing above the shelf would hit it; the hand enters the shelf's depth only over `goal`.
    """
    position, _ = m.target
    if position[2] < z - 1e-6:
        yield from m.move([position[0], position[1], z], orientation, gripper, tol=0.01, settle=3)
    front = ws.cabinet_front_y() - 0.03
    height = max(z, goal[2])
    if max(position[1], goal[1]) > front and abs(goal[0] - position[0]) > 0.02:
        if position[1] > front:
            yield from m.move([position[0], front, height], orientation, gripper, tol=0.01, settle=3)
        yield from m.move([goal[0], min(goal[1], front), height], orientation, gripper, tol=0.01, settle=3)
    yield from m.move([goal[0], goal[1], height], orientation, gripper, tol=0.008, settle=10)


def free_hand(ws: Workspace, m: Motion, *, rise: float = 0.06) -> Plan:
    """Let go of whatever the hand does and end above it at the safe height, pointing down.

    A block held in the air is first set down on the table; fingers around a handle open and back
    off along the tool axis; a hand inside the cabinet first comes out toward the robot.
    """
    held = ws.held_block()
    if held is not None and ws.support(held) == "robot":
        yield from set_down(ws, m)
    elif ws.robot.gripper_action < 0:
        yield from m.grip(OPEN, steps=8)
    position, orientation = m.target
    pointing = euler_to_matrix(orientation)[:, 2]
    if pointing[2] > -0.7:  # the tool points sideways: pull back along its axis first
        position = position - pointing * BACK_OFF
        yield from m.move(position, orientation, OPEN, speed=SPEEDS.approach, tol=0.01, settle=5)
    if position[1] > ws.cabinet_front_y() - 0.01:
        position = np.array([position[0], ws.cabinet_front_y() - 0.05, position[2] + 0.01])
        yield from m.move(position, orientation, OPEN, speed=SPEEDS.approach, tol=0.01, settle=5)
    yaw = float(np.clip(orientation[2], *YAW_LIMITS))
    up = position + [0.0, 0.0, rise]
    if position[2] < SAFE_Z:
        yield from m.move(up, orientation, OPEN, speed=SPEEDS.approach, tol=0.01, settle=5)
    yield from m.move(np.maximum(up, [-np.inf, -np.inf, SAFE_Z]), m.down(yaw), OPEN, tol=0.01, settle=5)


def carry_pose(m: Motion, turn: float = 0.0) -> np.ndarray:
    """Orientation after turning the wrist by `turn` with the tool's lean turned along: a held block stays level."""
    yaw, lean = m.yaw_and_lean()
    c, s = np.cos(turn), np.sin(turn)
    return m.down(yaw + turn, (c * lean[0] - s * lean[1], s * lean[0] + c * lean[1]))


def lower_onto(ws: Workspace, m: Motion, held: BlockView, goal_xy: np.ndarray, support_z: float,
               gap: float = RELEASE_GAP) -> Plan:
    """From above the goal, lower the held block until its lowest point is `gap` above `support_z`, let go.

    The descent is measured on the block itself (its AABB), so a block held off-centre or tilted
    is still let go just above its support.
    """
    position, orientation = m.target
    yield from m.move([goal_xy[0], goal_xy[1], position[2]], orientation, CLOSE, tol=0.005)
    tcp_z = support_z + gap + ws.bottom_below_tcp(held)
    yield from m.move([goal_xy[0], goal_xy[1], tcp_z + 0.03], orientation, CLOSE, speed=SPEEDS.approach, tol=0.006)
    yield from m.move([goal_xy[0], goal_xy[1], tcp_z], orientation, CLOSE, speed=SPEEDS.approach, tol=0.004)
    yield from m.grip(OPEN, steps=10)


def set_down(ws: Workspace, m: Motion) -> Plan:
    """Put the held block on a free spot of the table and let go."""
    position, _ = m.target
    held = ws.held_block()
    goal = np.array([*ws.free_table_spot(), 0.0]) + ws.grip_offset(held)
    pose = carry_pose(m)
    yield from transit(ws, m, [goal[0], goal[1], 0.0], pose, CLOSE, z=min(SAFE_Z, position[2] + 0.02))
    yield from lower_onto(ws, m, held, goal[:2], TABLE_Z)


def release(m: Motion, rise: float = 0.08) -> Plan:
    """Open the fingers where they are and rise by `rise` metres."""
    position, orientation = m.target
    yield from m.grip(OPEN, steps=10)
    yield from m.move(position + [0.0, 0.0, rise], orientation, OPEN, speed=SPEEDS.approach, tol=0.01)

"""Experts that put the held block somewhere: on the shelf, into the drawer, on top of another block.

They start from the moment a lift succeeded (the block in the fingers) and carry it at the safe
height. Goals are for the block's centre and are turned into TCP goals with the grip offset (a
block is rarely held at its centre). On the shelf the block is turned to lie along y like CALVIN's
shelf spots, so it takes the least of the shelf's width, and it goes where the shelf is freest.
"""

from __future__ import annotations

import numpy as np

from envs.experts.articulated import door_goal_clearing, slide_door
from envs.experts.blocks import HAND_CLEARANCE, grasp_lean
from envs.experts.motion import CLOSE, OPEN, SPEEDS, YAW_LIMITS, Motion, Plan
from envs.experts.moves import carry_pose, lower_onto, release, transit
from envs.experts.workspace import BLOCK_HALF_HEIGHT, SHELF_Y, BlockView, Workspace

WALL_CLEARANCE = 0.04  # m, between a placed block's side and the cabinet's side wall
FINGER_GAP = 0.045  # m, room for a finger between a placed block and a block already on the shelf
SHELF_YAW = np.pi / 2  # rad, blocks lie along y on the shelf
DRAWER_DROP = 0.02  # m, a block is let go this far above the drawer's floor


def wrist_turn(held: BlockView, yaw: float, current: float) -> float:
    """The smallest wrist turn that gives the held block yaw `yaw` (mod pi) within the wrist's range."""
    aligned = float((yaw - held.yaw + np.pi / 2) % np.pi - np.pi / 2)
    turns = [t for t in aligned + np.pi * np.arange(-2, 3) if YAW_LIMITS[0] <= current + t <= YAW_LIMITS[1]]
    return min(turns, key=abs)


def shelf_interval(ws: Workspace) -> tuple[float, float]:
    """The range of block-centre x on the uncovered part of the shelf (may be empty: low > high)."""
    door_left, door_right = ws.door_span()
    low, high = ws.shelf_x
    if door_left - low > high - door_right:
        return low + BLOCK_HALF_HEIGHT + WALL_CLEARANCE, door_left - BLOCK_HALF_HEIGHT - HAND_CLEARANCE
    return door_right + BLOCK_HALF_HEIGHT + HAND_CLEARANCE, high - BLOCK_HALF_HEIGHT - WALL_CLEARANCE


def shelf_x(ws: Workspace, held: BlockView) -> float:
    """Block-centre x on the uncovered shelf farthest from the blocks already there (then nearest its middle)."""
    low, high = shelf_interval(ws)
    candidates = np.linspace(low, high, 25)
    others = [b for b in ws.blocks() if b.uid != held.uid and ws.support(b) == "shelf"]
    gaps = [np.abs(candidates - b.position[0]) - BLOCK_HALF_HEIGHT - abs(np.cos(b.yaw)) * b.length / 2 for b in others]
    score = np.minimum(np.min(gaps, axis=0), FINGER_GAP) if gaps else np.zeros_like(candidates)
    best = candidates[score >= score.max() - 1e-9]
    return float(best[np.argmin(np.abs(best - (low + high) / 2))])


def place_in_slider(ws: Workspace, m: Motion) -> Plan:
    """Put the held block on the uncovered part of the shelf behind the sliding door.

    The tool leans into the cabinet here (the hand must stay under the top board), so a block
    taken from the table is let go tilted a little and settles on the shelf.
    """
    held = ws.held_block()
    if held is None:
        return
    low, high = shelf_interval(ws)
    if low > high:  # the door stands mid-way: push it to an end first, block in hand
        door = ws.joint_range("base__slide")
        yield from slide_door(ws, m, door_goal_clearing(ws, *ws.shelf_x) or door[0])
    yaw, _ = m.yaw_and_lean()
    turn = wrist_turn(held, SHELF_YAW, yaw)
    spot = np.array([shelf_x(ws, held), SHELF_Y, 0.0]) + ws.grip_offset(held, turn)
    pose = m.down(yaw + turn, grasp_lean(ws, spot, yaw + turn))
    front = spot + [0.0, -0.1, ws.shelf_top() + 0.09]
    yield from transit(ws, m, front, pose, CLOSE)
    yield from m.move(front, pose, CLOSE, tol=0.008)
    yield from m.move([spot[0], spot[1], front[2]], pose, CLOSE, speed=SPEEDS.approach, tol=0.006)
    yield from lower_onto(ws, m, held, spot[:2], ws.shelf_top())
    position, _ = m.target
    yield from m.move(position + [0.0, 0.0, 0.03], pose, OPEN, speed=SPEEDS.approach, tol=0.01)
    yield from m.move(position + [0.0, -0.12, 0.08], pose, OPEN, tol=0.01)


def place_in_drawer(ws: Workspace, m: Motion) -> Plan:
    """Put the held block into the open drawer, in its part in front of the table."""
    held = ws.held_block()
    if held is None:
        return
    front, back = ws.drawer_free_y()
    goal = np.array([ws.drawer_x(), (front + back) / 2, 0.0]) + ws.grip_offset(held)
    yield from transit(ws, m, goal, carry_pose(m), CLOSE)
    yield from lower_onto(ws, m, held, goal[:2], ws.drawer_floor(), gap=DRAWER_DROP)
    yield from release(m, rise=0.15)


def stack_block(ws: Workspace, m: Motion) -> Plan:
    """Put the held block on top of a block that lies on the table, aligned with it."""
    held = ws.held_block()
    bases = [b for b in ws.blocks() if held is not None and b.uid != held.uid and ws.support(b) == "table"]
    if not bases:
        return
    base = min(bases, key=lambda b: np.linalg.norm(b.position[:2] - held.position[:2]))
    yaw, _ = m.yaw_and_lean()
    turn = wrist_turn(held, base.yaw, yaw)
    goal = np.array([*base.position[:2], 0.0]) + ws.grip_offset(held, turn)
    yield from transit(ws, m, [goal[0], goal[1], ws.top(base) + 0.1], carry_pose(m, turn), CLOSE)
    yield from lower_onto(ws, m, held, goal[:2], ws.top(base))
    yield from release(m)

"""Experts that take hold of or slide the blocks: lift, rotate, push, unstack, push into the drawer.

Every plan reads the block poses when it starts (and again after each grasp), so it follows the
blocks wherever the evaluation protocol's randomisation or a previous task put them. Grasps close
the fingers across a block's short side (`grasp_yaw`); far targets lean the tool away from the
robot (`Workspace.reach_lean`); every plan first lets go of whatever the hand holds (`free_hand`).
Putting a held block somewhere is `placing.py`.
"""

from __future__ import annotations

import numpy as np

from envs.experts.articulated import door_goal_clearing, slide_door
from envs.experts.motion import CLOSE, NEUTRAL_YAW, OPEN, SPEEDS, YAW_LIMITS, Motion, Plan
from envs.experts.moves import FINGER_HALF_THICKNESS, SAFE_Z, free_hand, release, transit
from envs.experts.workspace import BLOCK_HALF_HEIGHT, TABLE_Z, BlockView, Workspace

LIFT = 0.1  # m, how high a lifted block goes (the oracle wants > 0.05, > 0.03 from the shelf)
PUSH_DISTANCE = 0.13  # m, block displacement aimed for (the oracle wants > 0.1)
PUSH_HEIGHT = 0.015  # m, fingertips above the table while pushing
DRAWER_AIM = 0.12  # m, a block pushed into the drawer lands at most this far from the drawer's middle (x)
BUTTON_KEEP_OUT = 0.075  # m, closed fingers start a push no nearer the button's axis (its radius 0.032 + theirs)
ROTATION = np.pi / 2  # rad, aimed turn (the oracle wants > 60 deg)
HAND_CLEARANCE = 0.06  # m, free shelf width needed beside a block's side for the fingers and hand
SHELF_LEAN = 0.5  # rad, fingertips lean into the cabinet when working on the shelf


def yaw_options(block: BlockView) -> np.ndarray:
    """Gripper yaws that close the fingers across the block's short side (every pi/2 for the cube)."""
    step = np.pi / 2 if block.cube else np.pi
    return block.yaw + step * np.arange(-4, 5)


def grasp_yaw(block: BlockView, current: float, turn: float = 0.0) -> float:
    """A grasp yaw for which yaw + `turn` stays within the wrist's range: near neutral, then near `current`.

    Args:
        block: the block to grasp.
        current: the wrist's commanded yaw now (rad, unwrapped).
        turn: how far the plan will turn the wrist after grasping (rad).
    """
    options = [y for y in yaw_options(block) if YAW_LIMITS[0] <= min(y, y + turn) and max(y, y + turn) <= YAW_LIMITS[1]]
    return float(min(options, key=lambda y: abs(y + turn / 2 - NEUTRAL_YAW) + 0.5 * abs(y - current)))


def grasp_lean(ws: Workspace, position: np.ndarray, yaw: float) -> np.ndarray:
    """Tool lean for a grasp at `position` with wrist `yaw`: only about the closing axis, so it stays level.

    On the shelf the fingertips also lean into the cabinet (`SHELF_LEAN`): the hand then stays clear
    of the cabinet's top board.
    """
    lean = ws.reach_lean(position)
    if position[1] > ws.cabinet_front_y():
        lean = lean + [0.0, SHELF_LEAN]
    across = np.array([np.cos(yaw), np.sin(yaw)])  # horizontal, perpendicular to the closing axis
    return across * float(lean @ across)


def grasp(ws: Workspace, m: Motion, block: BlockView, *, turn: float = 0.0, lift: float = LIFT) -> Plan:
    """From a free hand: over the block, down, close the fingers across it, and lift by `lift`."""
    yaw = grasp_yaw(block, m.target[1][2], turn)
    pose = m.down(yaw, grasp_lean(ws, block.position, yaw))
    above = block.position + [0.0, 0.0, 0.08]
    yield from transit(ws, m, above, pose, OPEN, z=max(SAFE_Z, above[2]))
    yield from m.move(above, pose, OPEN, tol=0.006)
    yield from m.move(block.position, pose, OPEN, speed=SPEEDS.approach, tol=0.004)
    yield from m.grip(CLOSE, steps=12)
    if lift > 0:
        yield from m.move(block.position + [0.0, 0.0, lift], pose, CLOSE, speed=SPEEDS.approach, tol=0.01)


def lift_block(ws: Workspace, m: Motion, color: str) -> Plan:
    """`lift_<color>_block_{table,slider,drawer}`: grasp the block where it lies and raise it."""
    yield from free_hand(ws, m)
    block = ws.block(color)
    on_shelf = block.position[1] > ws.cabinet_front_y()
    if on_shelf:  # the sliding door may still cover part of the block: slide it clear first
        reach = extent_along(block, 0.0) + HAND_CLEARANCE
        goal = door_goal_clearing(ws, block.position[0] - reach, block.position[0] + reach)
        if goal is not None:
            yield from slide_door(ws, m, goal)
    yield from grasp(ws, m, block, lift=0.06 if on_shelf else LIFT)
    if on_shelf:  # out from under the cabinet's top board before rising further
        position, orientation = m.target
        yield from m.move(position + [0.0, -0.1, 0.04], orientation, CLOSE, speed=SPEEDS.approach, tol=0.01)


def unstack_block(ws: Workspace, m: Motion) -> Plan:
    """Take the top block of a stack off and set it down on the table beside the stack."""
    yield from free_hand(ws, m)
    tops = [b for b in ws.blocks() if ws.support(b) == "block"]
    if not tops:
        return
    yield from grasp(ws, m, max(tops, key=lambda b: b.position[2]))


def extent_along(block: BlockView, angle: float) -> float:
    """Half the block's footprint along the horizontal direction `angle` (rad)."""
    relative = block.yaw - angle
    return block.length / 2 * abs(np.cos(relative)) + BLOCK_HALF_HEIGHT * abs(np.sin(relative))


def pusher_start(block: BlockView, goal: np.ndarray) -> np.ndarray:
    """Where the closed fingers start to slide `block` toward `goal` (x, y): just behind it, at push height."""
    offset = np.asarray(goal[:2], dtype=float) - block.position[:2]
    angle = float(np.arctan2(offset[1], offset[0]))
    start = block.position[:2] - np.array([np.cos(angle), np.sin(angle)]) * (
        extent_along(block, angle) + FINGER_HALF_THICKNESS + 0.02)
    return np.array([*start, TABLE_Z + PUSH_HEIGHT + 0.008])


def slide(ws: Workspace, m: Motion, block: BlockView, goal: np.ndarray) -> Plan:
    """From a free hand: closed fingers push `block` along the table so its centre reaches `goal` (x, y).

    The fingers' broad side faces the push direction and meets the block through its centre.
    """
    offset = np.asarray(goal[:2], dtype=float) - block.position[:2]
    angle = float(np.arctan2(offset[1], offset[0]))
    direction = np.array([np.cos(angle), np.sin(angle), 0.0])
    yaw = float(min(angle + np.pi * np.arange(-2, 3), key=lambda y: abs(y - m.target[1][2])))
    start = pusher_start(block, goal)
    end = start + direction * (np.linalg.norm(offset) + 0.02)
    pose = m.down(yaw, ws.reach_lean(end))
    yield from m.grip(CLOSE, steps=4)
    yield from transit(ws, m, start + [0, 0, 0.06], pose, CLOSE)
    yield from m.move(start, pose, CLOSE, speed=SPEEDS.approach)
    yield from m.move(end, pose, CLOSE, speed=SPEEDS.push, settle=6)
    yield from m.move(end - direction * 0.02 + [0.0, 0.0, 0.08], pose, CLOSE, speed=SPEEDS.approach, tol=0.01)


def push_block(ws: Workspace, m: Motion, color: str, direction: int) -> Plan:
    """`push_<color>_block_{right,left}`: slide the block `PUSH_DISTANCE` along world x (+1 right, -1 left)."""
    yield from free_hand(ws, m)
    block = ws.block(color)
    yield from slide(ws, m, block, block.position[:2] + [direction * PUSH_DISTANCE, 0.0])


def rotate_block(ws: Workspace, m: Motion, color: str, direction: int) -> Plan:
    """`rotate_<color>_block_{left,right}`: grasp, lift a little, turn 90 deg (+1 left), set down, let go."""
    yield from free_hand(ws, m)
    block = ws.block(color)
    turn = direction * ROTATION
    yield from grasp(ws, m, block, turn=turn, lift=0.01)
    position, orientation = m.target
    yield from m.move(position, orientation + [0.0, 0.0, turn], CLOSE, speed=SPEEDS.approach, tol=0.006)
    yield from m.move(position - [0.0, 0.0, 0.008], m.target[1], CLOSE, speed=SPEEDS.approach, settle=4)
    yield from release(m)


def push_into_drawer(ws: Workspace, m: Motion) -> Plan:
    """Slide a table block over the table's front edge so it drops into the open drawer.

    The block is aimed at the drawer's middle as far as `DRAWER_AIM` allows, on the straightest line
    whose starting point keeps the fingers off the LED button. A block right beside the button (the
    fingers would have to come down on it and toggle the LED) is left alone: the plan gives up.
    """
    yield from free_hand(ws, m)
    drawer_x = ws.drawer_x()
    candidates = [b for b in ws.blocks() if ws.support(b) == "table"]
    if not candidates:
        return
    block = min(candidates, key=lambda b: abs(b.position[0] - drawer_x))
    edge_y = ws.drawer_free_y()[1] - 0.06
    aims = np.clip(block.position[0] + np.linspace(-DRAWER_AIM, DRAWER_AIM, 17), drawer_x - DRAWER_AIM,
                   drawer_x + DRAWER_AIM)
    button = ws.handle("base__button")[:2]
    clear = [x for x in aims if np.linalg.norm(pusher_start(block, [x, edge_y])[:2] - button) > BUTTON_KEEP_OUT]
    if clear:
        yield from slide(ws, m, block, np.array([min(clear, key=lambda a: abs(a - block.position[0])), edge_y]))

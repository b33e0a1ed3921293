"""Experts for the desk's articulated parts: sliding door, drawer, LED button and light-bulb switch.

Each plan is a generator of relative actions (see `motion.py`) that starts from wherever the
previous task left the robot (`free_hand` first lets go of anything and rises) and reads the joint
it works on when it starts, so it is robust to the door, drawer and switch states of the
evaluation protocol and of play episodes. Contact strategies:
- sliding door: open fingers straddle the handle, the target moves along the door's axis;
- drawer: the gripper turns to point at the desk, pinches the handle lip between its fingers and
  pulls (open); pointing down, closed fingers push the handle's front face (close);
- button: closed fingers press the button top 2 cm down and rise (the LED toggles on the press);
- switch: pointing down with closed fingers, the fingers' back face lifts the lever's lower edge
  along its axis (on), or the fingertips press its top face down along the axis (off).
"""

from __future__ import annotations

import numpy as np

from envs.experts.motion import CLOSE, OPEN, SPEEDS, Motion, Plan
from envs.experts.moves import FINGER_HALF_THICKNESS, FINGERTIP_BELOW_TCP, free_hand, transit
from envs.experts.workspace import Workspace

DOOR = "base__slide"
DOOR_MARGIN = 0.012  # m, how close to its end stop the door is driven
DRAWER_MARGIN = 0.006  # m
SWITCH_LEAN = np.array([0.0, 0.3])  # rad, fingertips lean toward the desk (+y) to lift the lever square
SWITCH_HALF_THICKNESS = 0.015  # m, the lever's half thickness along its axis (0.037 URDF x 0.8 / 2)


def move_slider(ws: Workspace, m: Motion, side: str) -> Plan:
    """`move_slider_left` (joint up, the door moves to -x) or `move_slider_right` (joint down)."""
    yield from free_hand(ws, m)
    low, high = ws.joint_range(DOOR)
    yield from slide_door(ws, m, high - DOOR_MARGIN if side == "left" else low + DOOR_MARGIN)


def slide_door(ws: Workspace, m: Motion, goal: float) -> Plan:
    """From a free hand: straddle the door handle with open fingers and slide the door to joint value `goal`."""
    axis = ws.direction(DOOR)
    grip_at = ws.handle(DOOR) + [0.0, -0.006, 0.004]
    down = m.down(np.pi / 2)  # fingers close along x: one on each side of the handle
    yield from transit(ws, m, grip_at + [0, 0, 0.06], down, OPEN)
    yield from m.move(grip_at, down, OPEN, speed=SPEEDS.approach)
    end = grip_at + axis * (goal - ws.joint(DOOR))
    yield from m.move(end, down, OPEN, speed=SPEEDS.push, settle=10)
    yield from m.move(end + [0.0, 0.0, 0.07], down, OPEN, speed=SPEEDS.approach, tol=0.01)


def door_goal_clearing(ws: Workspace, x_low: float, x_high: float) -> float | None:
    """The door's end stop that leaves [x_low, x_high] free, or None if the door leaves it free already.

    The door goes all the way (less `DOOR_MARGIN`) to the end away from the interval: a hand working
    on the shelf next to a door edge would catch the door, which leans over the shelf.
    """
    left, right = ws.door_span()
    if right <= x_low or left >= x_high:
        return None
    low, high = ws.joint_range(DOOR)
    # The door moves to -x as the joint grows.
    to_right = (left + right) / 2 > (x_low + x_high) / 2
    return low + DOOR_MARGIN if to_right else high - DOOR_MARGIN


def pinch_orientation(m: Motion) -> np.ndarray:
    """Euler target pointing the gripper horizontally at the desk (+y), fingers closing along z."""
    roll = m.target[1][0]
    return np.array([(np.pi if roll >= 0 else -np.pi) + np.pi / 2, 0.0, 0.0])


def open_drawer(ws: Workspace, m: Motion) -> Plan:
    """Pinch the drawer handle's lip from the front and pull the drawer out to its end stop."""
    yield from free_hand(ws, m)
    joint = "base__drawer"
    handle = ws.handle(joint)
    axis = ws.direction(joint)  # -y: out of the desk
    pinch = pinch_orientation(m)
    front = handle + axis * 0.08
    # The wrist turn (~1.6 rad, 32 steps) runs through the transit and the descent: half of it over each,
    # instead of turning on the spot; from the evaluation pose the drawer opens 16 steps sooner (76, was 92).
    _, start = m.target
    yield from transit(ws, m, front + [0, 0, 0.12], (start + pinch) / 2, OPEN)
    yield from m.move(front, pinch, OPEN, tol=0.006)
    grip_at = handle - axis * 0.008
    yield from m.move(grip_at, pinch, OPEN, speed=SPEEDS.approach)
    yield from m.grip(CLOSE, steps=10)
    high = ws.joint_range(joint)[1]
    end = grip_at + axis * (high - DRAWER_MARGIN - ws.joint(joint))
    yield from m.move(end, pinch, CLOSE, speed=SPEEDS.push, settle=10)
    yield from m.grip(OPEN, steps=8)
    yield from m.move(end + axis * 0.06, pinch, OPEN, speed=SPEEDS.approach, tol=0.01)
    yield from m.move(end + axis * 0.06 + [0, 0, 0.15], m.down(np.pi / 2), OPEN, tol=0.01)


def close_drawer(ws: Workspace, m: Motion) -> Plan:
    """Pointing down, closed fingers push the handle's front face until the drawer is shut."""
    yield from free_hand(ws, m)
    joint = "base__drawer"
    handle = ws.handle(joint)
    axis = ws.direction(joint)
    down = m.down(np.pi / 2)
    # Fingers just in front of the handle lip (3.2 cm deep), fingertips at its height.
    push_at = handle + axis * (0.016 + FINGER_HALF_THICKNESS + 0.004) + [0, 0, FINGERTIP_BELOW_TCP]
    yield from m.grip(CLOSE, steps=4)
    yield from transit(ws, m, push_at + [0, 0, 0.1], down, CLOSE)
    yield from m.move(push_at, down, CLOSE, speed=SPEEDS.approach)
    end = push_at - axis * (ws.joint(joint) - ws.joint_range(joint)[0] + 0.004)
    yield from m.move(end, down, CLOSE, speed=SPEEDS.push, settle=12)
    yield from m.move(end + axis * 0.05 + [0, 0, 0.12], down, CLOSE, speed=SPEEDS.approach, tol=0.01)


def press_button(ws: Workspace, m: Motion) -> Plan:
    """`turn_on_led` / `turn_off_led`: one press of the button toggles the LED."""
    yield from free_hand(ws, m)
    joint = "base__button"
    top = ws.handle(joint) + [0, 0, FINGERTIP_BELOW_TCP]
    down = m.down(np.pi / 2)
    yield from m.grip(CLOSE, steps=4)
    yield from transit(ws, m, top + [0, 0, 0.06], down, CLOSE)
    yield from m.move(top + [0, 0, 0.01], down, CLOSE, speed=SPEEDS.approach)
    travel = ws.joint_range(joint)[1]
    yield from m.move(top - [0, 0, travel + 0.006], down, CLOSE, speed=SPEEDS.push, settle=6)
    yield from m.move(top + [0, 0, 0.06], down, CLOSE, speed=SPEEDS.approach, tol=0.01)


def flip_switch(ws: Workspace, m: Motion, on: bool) -> Plan:
    """`turn_on_lightbulb` (lift the lever up its axis) or `turn_off_lightbulb` (press it down).

    The tool leans toward the desk (`SWITCH_LEAN`, plus the reach lean for a far switch), so the
    fingers' back face meets the lever's lower edge nearly square to its axis.
    """
    yield from free_hand(ws, m)
    joint = "base__switch"
    tip = ws.handle(joint)
    axis = ws.direction(joint)  # up and into the desk
    down = m.down(np.pi / 2, SWITCH_LEAN + ws.reach_lean(tip))
    low, high = ws.joint_range(joint)
    if on:  # fingers in front of and just below the lever's lower front edge
        start = tip - axis * SWITCH_HALF_THICKNESS + [0.0, -0.016, -0.006]
        end = start + axis * (high - 0.004 - ws.joint(joint)) + [0.0, 0.01, 0.0]
    else:  # fingertips on the lever's top face, just behind its front edge
        start = tip + axis * SWITCH_HALF_THICKNESS + [0.0, 0.01, 0.008]
        end = start - axis * (ws.joint(joint) - low - 0.004)
    approach = start + [0.0, -0.03 if on else 0.0, 0.0]
    yield from m.grip(CLOSE, steps=4)
    yield from transit(ws, m, approach + [0, 0, 0.06], down, CLOSE)
    yield from m.move(approach, down, CLOSE, speed=SPEEDS.approach)
    yield from m.move(start, down, CLOSE, speed=SPEEDS.approach)
    yield from m.move(end, down, CLOSE, speed=SPEEDS.push, settle=8)
    yield from m.move(end + [0, -0.05, 0.03], down, CLOSE, speed=SPEEDS.approach, tol=0.01)

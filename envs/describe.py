"""A short English description of a CALVIN scene from its state: the ground truth of UP-VLA's L'.

`describe_scene(scene_obs, scene)` needs only CALVIN's `scene_obs` (24,) and the scene letter (for
the block order and the sliding door's range), so it describes real CALVIN frames as well as
PlayTable's; `robot_obs` (15,), when given, also tells which block the gripper holds. The same
state always gives the same words. It says where each block is (table, sliding cabinet, drawer,
stacked, held, lifted, floor), left/right and in-front/behind relations of the blocks on the table,
the drawer and sliding-door state, and both lights, in about 30 words: the MMU-conditioned prompt
spends a few dozen tokens on it (`model.max_description_len`).

Example:
    describe_scene(obs["scene_obs"], "D", obs["robot_obs"])
    # 'red block left of blue block on the table. pink block in the cabinet. drawer open, door left,
    #  bulb on, led off.'
"""

from __future__ import annotations

import functools

import numpy as np

from envs.playtable.layout import GLOBAL_SCALING, load_layout

TABLE_Z = (0.43, 0.475)  # m, block centres resting on the table or the shelf (0.46)
CABINET_Y = 0.02  # m, blocks at larger y are inside the sliding cabinet (on its shelf)
DRAWER_Z = 0.42  # m, block centres below this, in front of the table, are in the drawer
FLOOR_Z = 0.2  # m, block centres below this have fallen to the floor
STACK_XY = 0.05  # m, a block this close (horizontally) above another one rests on it
SIDE_BY_SIDE = 0.04  # m, table blocks closer than this in y are not "in front of"/"behind" each other
HOLD_XY, HOLD_Z = 0.04, 0.04  # m, a held block's centre is this close to the TCP
DRAWER_CLOSED, DRAWER_OPEN = 0.04, 0.15  # m of drawer travel (range 0.22): closed / half open / open


@functools.lru_cache(maxsize=4)
def _scene_facts(scene: str) -> tuple[tuple[str, ...], float]:
    """Block colours in `scene_obs` order and the sliding door's world range, for scene `scene`."""
    layout = load_layout(scene)
    colors = tuple(block.name.removeprefix("block_") for block in layout.blocks)
    return colors, layout.joints["base__slide"].upper * GLOBAL_SCALING


def block_places(scene_obs: np.ndarray, scene: str, robot_obs: np.ndarray | None = None) -> dict[str, str]:
    """Colour -> place: "table", "cabinet", "drawer", "floor", "held", "lifted" or "on <colour>".

    Args:
        scene_obs: CALVIN's (24,) scene state of scene `scene`.
        scene: "A".."D" (the block order of scene_obs follows the scene).
        robot_obs: CALVIN's (15,) robot state; without it a held block is only "lifted".
    """
    colors, _ = _scene_facts(scene)
    positions = {c: np.asarray(scene_obs[6 + 6 * i: 9 + 6 * i], dtype=float) for i, c in enumerate(colors)}
    places = {}
    for color, (x, y, z) in positions.items():
        below = [c for c, p in positions.items() if c != color and np.hypot(x - p[0], y - p[1]) < STACK_XY
                 and 0.02 < z - p[2] < 0.06]
        if robot_obs is not None and robot_obs[14] < 0 and _near_tcp(positions[color], robot_obs):
            places[color] = "held"
        elif below:
            places[color] = f"on {below[0]}"
        elif z < FLOOR_Z:
            places[color] = "floor"
        elif z < DRAWER_Z:
            places[color] = "drawer"
        elif z <= TABLE_Z[1]:
            places[color] = "cabinet" if y > CABINET_Y else "table"
        else:
            places[color] = "lifted"
    return places


def _near_tcp(position: np.ndarray, robot_obs: np.ndarray) -> bool:
    offset = position - np.asarray(robot_obs[:3], dtype=float)
    return bool(np.hypot(offset[0], offset[1]) < HOLD_XY and abs(offset[2]) < HOLD_Z)


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _table_clause(table: list[str], positions: dict[str, np.ndarray]) -> str:
    """Blocks on the table, left to right, with in-front/behind for a pair."""
    table = sorted(table, key=lambda c: positions[c][0])
    if len(table) == 1:
        return f"{table[0]} block on the table"
    if len(table) == 3:
        return f"{_join([f'{c}' for c in table])} blocks on the table, left to right"
    left, right = table
    dy = positions[left][1] - positions[right][1]
    depth = "" if abs(dy) < SIDE_BY_SIDE else (" and behind" if dy > 0 else " and in front of")
    return f"{left} block left of{depth} {right} block on the table"


def describe_scene(scene_obs: np.ndarray, scene: str, robot_obs: np.ndarray | None = None) -> str:
    """The scene in a few short clauses (see the module docstring); deterministic.

    Args:
        scene_obs: CALVIN's (24,) scene state.
        scene: the scene letter "A".."D" (CALVIN's `calvin_scene_<S>`).
        robot_obs: optional (15,) robot state (tells a held block from a lifted one).

    Raises:
        ValueError: a scene_obs that is not 24 finite numbers.
    """
    scene_obs = np.asarray(scene_obs, dtype=float)
    if scene_obs.shape != (24,) or not np.all(np.isfinite(scene_obs)):
        raise ValueError(f"scene_obs: expected 24 finite values, got shape {scene_obs.shape}")
    colors, door_range = _scene_facts(scene)
    positions = {c: scene_obs[6 + 6 * i: 9 + 6 * i] for i, c in enumerate(colors)}
    places = block_places(scene_obs, scene, robot_obs)
    clauses = []
    table = [c for c in colors if places[c] == "table"]
    if table:
        clauses.append(_table_clause(table, positions))
    wording = {"cabinet": "in the cabinet", "drawer": "in the drawer", "floor": "on the floor", "lifted": "lifted"}
    for place, words in wording.items():
        here = [c for c in colors if places[c] == place]
        if here:
            clauses.append(f"{_join(here)} block{'s' if len(here) > 1 else ''} {words}")
    clauses += [f"{c} block stacked on {places[c][3:]} block" for c in colors if places[c].startswith("on ")]
    held = [c for c in colors if places[c] == "held"]
    clauses.append(f"gripper holds {held[0]} block" if held else "gripper empty")
    drawer = scene_obs[1]
    drawer_state = "closed" if drawer < DRAWER_CLOSED else "open" if drawer > DRAWER_OPEN else "half open"
    door = "left" if scene_obs[0] > door_range / 2 else "right"
    lights = f"bulb {'on' if scene_obs[4] > 0.5 else 'off'}, led {'on' if scene_obs[5] > 0.5 else 'off'}"
    return ". ".join(clauses) + f". drawer {drawer_state}, door {door}, {lights}."

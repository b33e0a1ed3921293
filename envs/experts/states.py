"""Symbolic states in any scene: set a scene to one (play data) and read one off the simulator.

CALVIN's reset rule (`envs.sequences.initial_condition_to_obs`) places blocks at scene D's fixed
spots in scene D's block order. Play data in scenes A-C needs the same symbolic states laid out in
each scene's own geometry and `movable_objects` order: `scene_obs_for_state` samples each block's
spot inside the scene's own sampling areas (CALVIN's `surfaces`). `read_symbolic_state` is the
inverse: it reads which place each block is in, so a play episode can choose its next task with
CALVIN's symbolic model (`envs.symbolic.next_state`) from what really happened.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import numpy as np

from envs.experts.workspace import COLORS, Workspace
from envs.sequences import EVAL_ROBOT_OBS
from envs.symbolic import SYMBOLIC_KEYS, validate_symbolic_state

TABLE_YAW_SPREAD = np.pi / 6  # rad, table block yaw ~ U(pi/2 +- this); CALVIN's evaluation uses pi/8
SHELF_YAW_SPREAD = np.pi / 8  # rad, on the shelf: a block turned further would reach into the door's slope
TABLE_SEPARATION = 0.12  # m, minimum centre distance of two blocks on the table
# m, shelf spot depth: CALVIN's spots are at 0.0924; nearer the door a block would cut the door's slope
SHELF_Y_RANGE = (0.088, 0.096)


def _sample_xy(rng: np.random.Generator, area: tuple, y_range: tuple[float, float] | None = None) -> np.ndarray:
    (x0, y0, _), (x1, y1, _) = area
    return np.array([rng.uniform(x0, x1), rng.uniform(*(y_range or (y0, y1)))])


def scene_obs_for_state(env: object, state: Mapping, rng: np.random.Generator) -> np.ndarray:
    """A `scene_obs` (24,) of `env`'s scene in symbolic initial state `state`, block spots sampled.

    Args:
        env: a `PlayTableEnv` (its layout gives the sampling areas, joint ranges and block order).
        state: a CALVIN symbolic state whose blocks are on the table or a shelf side.
        rng: draws the spots and yaws.

    Returns:
        (24,) float64 in the env's `scene_obs` layout (doors, switch, lights, blocks in scene order).
    """
    validate_symbolic_state(state, initial=True)
    layout = env.layout
    scene_obs = np.zeros(24)
    scene_obs[0] = env.scene.joint_range("base__slide")[1] if state["slider"] == "left" else 0.0
    scene_obs[1] = env.scene.joint_range("base__drawer")[1] if state["drawer"] == "open" else 0.0
    scene_obs[3] = env.scene.joint_range("base__switch")[1] if state["lightbulb"] else 0.0
    scene_obs[4], scene_obs[5] = state["lightbulb"], state["led"]
    heights = {"table": layout.surfaces["table"][0][2], "slider_left": 0.461, "slider_right": 0.461}
    table_spots = _table_spots(rng, layout.surfaces["table"], sum(state[f"{c}_block"] == "table" for c in COLORS))
    for index, block in enumerate(layout.blocks):
        place = state[f"{block.name.removeprefix('block_')}_block"]
        xy = table_spots.pop() if place == "table" else _sample_xy(rng, layout.surfaces[place], SHELF_Y_RANGE)
        spread = TABLE_YAW_SPREAD if place == "table" else SHELF_YAW_SPREAD
        offset = 6 + 6 * index
        scene_obs[offset:offset + 3] = [*xy, heights[place]]
        scene_obs[offset + 5] = rng.uniform(np.pi / 2 - spread, np.pi / 2 + spread)
    return scene_obs


def _table_spots(rng: np.random.Generator, area: tuple, count: int) -> list[np.ndarray]:
    for _ in range(1000):
        spots = [_sample_xy(rng, area) for _ in range(count)]
        if all(np.linalg.norm(a - b) >= TABLE_SEPARATION for a, b in itertools.combinations(spots, 2)):
            return spots
    raise RuntimeError(f"no {count} table spots {TABLE_SEPARATION} m apart in {area}")


def reset_to_state(env: object, state: Mapping, rng: np.random.Generator) -> dict:
    """Reset `env` to CALVIN's evaluation robot pose and symbolic state `state` (spots sampled); return obs."""
    return env.reset(EVAL_ROBOT_OBS.copy(), scene_obs_for_state(env, state, rng))


def read_symbolic_state(ws: Workspace) -> dict:
    """The symbolic state (keys `SYMBOLIC_KEYS`) the simulator is in now.

    A block on the shelf is `slider_left` or `slider_right` by which half of the door's travel it
    is in; a block held off its support is `grasped`; a block resting on blocks only is
    `stacked_top` and the block under it `stacked_bottom`; one touching the drawer is `drawer`; one
    touching nothing of the desk (fallen to the floor, or in flight) is `none`, which no task accepts.
    """
    low, high = ws.joint_range("base__slide")
    middle = sum(ws.shelf_x) / 2
    places = {}
    for block in ws.blocks():
        support = ws.support(block)
        if support == "shelf":
            places[block.color] = "slider_left" if block.position[0] < middle else "slider_right"
        else:
            places[block.color] = {"robot": "grasped", "block": "stacked_top"}.get(support, support)
    for color, place in places.items():  # the block under a stacked one
        if place == "table" and any(p == "stacked_top" for p in places.values()):
            top = next(ws.block(c) for c, p in places.items() if p == "stacked_top")
            if np.linalg.norm(top.position[:2] - ws.block(color).position[:2]) < 0.06:
                places[color] = "stacked_bottom"
    lights = ws.scene.lights
    state = {"led": int(lights["led"]), "lightbulb": int(lights["lightbulb"]),
             "slider": "left" if ws.joint("base__slide") > (low + high) / 2 else "right",
             "drawer": "open" if ws.joint("base__drawer") > sum(ws.joint_range("base__drawer")) / 2 else "closed",
             **{f"{c}_block": places[c] for c in COLORS}, "grasped": int("grasped" in places.values())}
    return {key: state[key] for key in SYMBOLIC_KEYS}

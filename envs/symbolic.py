"""CALVIN's symbolic task model: the 34 tasks, their categories and precondition -> effect table.

This is the planning domain of `calvin_agent.evaluation.multistep_sequences` (not the physical
success oracle, which is `envs.tasks`). A symbolic state is a dict with keys `SYMBOLIC_KEYS` in that
order (the order matters: CALVIN seeds each chain's reset with a hash of `str(state.values())`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

# The list CALVIN's `np.random.choice` draws from; its order decides which chains come out.
TASK_ORDER: tuple[str, ...] = (
    "rotate_red_block_right", "rotate_red_block_left", "rotate_blue_block_right", "rotate_blue_block_left",
    "rotate_pink_block_right", "rotate_pink_block_left", "push_red_block_right", "push_red_block_left",
    "push_blue_block_right", "push_blue_block_left", "push_pink_block_right", "push_pink_block_left",
    "move_slider_left", "move_slider_right", "open_drawer", "close_drawer",
    "lift_red_block_table", "lift_red_block_slider", "lift_red_block_drawer",
    "lift_blue_block_table", "lift_blue_block_slider", "lift_blue_block_drawer",
    "lift_pink_block_table", "lift_pink_block_slider", "lift_pink_block_drawer",
    "place_in_slider", "place_in_drawer", "stack_block", "unstack_block",
    "turn_on_lightbulb", "turn_off_lightbulb", "turn_on_led", "turn_off_led", "push_into_drawer",
)
NUM_TASKS = len(TASK_ORDER)
COLORS = ("red", "blue", "pink")
SYMBOLIC_KEYS = ("led", "lightbulb", "slider", "drawer", "red_block", "blue_block", "pink_block", "grasped")
BLOCK_PLACES = ("table", "slider_right", "slider_left", "drawer", "grasped", "stacked_top", "stacked_bottom")
INITIAL_BLOCK_PLACES = ("table", "slider_right", "slider_left")
_VALUES = {"led": (0, 1), "lightbulb": (0, 1), "slider": ("right", "left"), "drawer": ("closed", "open"),
           "grasped": (0, 1), **{f"{c}_block": BLOCK_PLACES for c in COLORS}}


def _category(name: str) -> int:
    """A chain never repeats a category (CALVIN's `task_categories`)."""
    if name.startswith(("rotate_", "push_")) and name != "push_into_drawer":
        return 1
    fixed = {"move_slider": 2, "open_drawer": 3, "close_drawer": 3, "place_in": 7, "turn_": 8,
             "push_into_drawer": 9, "stack_block": 10, "unstack_block": 11}
    for prefix, category in fixed.items():
        if name.startswith(prefix):
            return category
    return {"table": 4, "slider": 5, "drawer": 6}[name.rsplit("_", 1)[1]]


TASK_CATEGORIES: dict[str, int] = {name: _category(name) for name in TASK_ORDER}

# An alternative is (condition, effect); a condition value is one allowed value or a tuple of them.
Alternative = tuple[dict, dict]


def _alternatives(name: str) -> list[Alternative]:
    """CALVIN's `tasks[name]`: its alternatives in CALVIN's order."""
    free = {"grasped": 0}
    words = name.split("_")
    if words[0] in ("rotate", "push") and name != "push_into_drawer":
        block = f"{words[1]}_block"
        return [({block: "table", **free}, {block: "table"})]
    if words[0] == "move":
        side, other = ("left", "right") if words[2] == "left" else ("right", "left")
        return [({"slider": other, **free}, {"slider": side})]
    if name in ("open_drawer", "close_drawer"):
        before, after = ("closed", "open") if name == "open_drawer" else ("open", "closed")
        return [({"drawer": before, **free}, {"drawer": after})]
    if words[0] == "lift":
        block, grab = f"{words[1]}_block", {f"{words[1]}_block": "grasped", "grasped": 1}
        if words[3] == "table":
            return [({block: "table", **free}, grab)]
        if words[3] == "slider":
            return [({block: "slider_left", "slider": "right", **free}, grab),
                    ({block: "slider_right", "slider": "left", **free}, grab)]
        return [({block: "drawer", "drawer": "open", **free}, grab)]
    if name == "place_in_slider":
        return [({f"{c}_block": "grasped", "slider": s, "grasped": 1}, {f"{c}_block": f"slider_{s}", "grasped": 0})
                for c in COLORS for s in ("right", "left")]
    if name == "place_in_drawer":
        return [({f"{c}_block": "grasped", "drawer": "open", "grasped": 1}, {f"{c}_block": "drawer", "grasped": 0})
                for c in COLORS]
    pairs = [(top, bottom) for top in COLORS for bottom in COLORS if top != bottom]
    if name == "stack_block":
        return [({f"{t}_block": "grasped", f"{b}_block": "table", "grasped": 1},
                 {f"{t}_block": "stacked_top", f"{b}_block": "stacked_bottom", "grasped": 0}) for t, b in pairs]
    if name == "unstack_block":
        return [({f"{t}_block": "stacked_top", f"{b}_block": "stacked_bottom", **free},
                 {f"{t}_block": "table", f"{b}_block": "table"}) for t, b in pairs]
    if words[0] == "turn":
        light, before = words[2], (0 if words[1] == "on" else 1)
        return [({light: before, **free}, {light: 1 - before})]
    # push_into_drawer: CALVIN lists the two other colours as (blue, pink), (red, pink), (blue, red).
    sliders = ("slider_right", "slider_left")
    return [({f"{c}_block": "table", **{f"{o}_block": sliders for o in COLORS if o != c}, "drawer": "open", **free},
             {f"{c}_block": "drawer", "grasped": 0}) for c in COLORS]


def _compile(alternative: Alternative) -> tuple[tuple[tuple[int, tuple], ...], tuple[tuple[int, object], ...]]:
    condition, effect = alternative
    index = SYMBOLIC_KEYS.index
    allowed = tuple((index(k), v if isinstance(v, tuple) else (v,)) for k, v in condition.items())
    return allowed, tuple((index(k), v) for k, v in effect.items())


TRANSITIONS: dict[str, list[Alternative]] = {name: _alternatives(name) for name in TASK_ORDER}
_COMPILED = [[_compile(a) for a in TRANSITIONS[name]] for name in TASK_ORDER]


@functools.lru_cache(maxsize=1 << 16)
def next_state(state: tuple, task: int) -> tuple | None:
    """The state after task index `task`, or None unless exactly one alternative applies (CALVIN's rule).

    Args:
        state: symbolic state values in `SYMBOLIC_KEYS` order.
        task: index into `TASK_ORDER`.
    """
    results = []
    for allowed, effect in _COMPILED[task]:
        if all(state[i] in values for i, values in allowed):
            updated = list(state)
            for i, value in effect:
                updated[i] = value
            results.append(tuple(updated))
    return results[0] if len(results) == 1 else None


def validate_symbolic_state(state: Mapping, *, initial: bool = False) -> None:
    """Raise ValueError naming the key when `state` is not a consistent CALVIN symbolic state.

    Args:
        state: the symbolic state dict.
        initial: also require what CALVIN's reset rule supports: nothing grasped, every block on
            the table or a slider side, at most two blocks on the table.
    """
    if not isinstance(state, Mapping) or tuple(state) != SYMBOLIC_KEYS:
        got = list(state) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"symbolic state: keys must be {list(SYMBOLIC_KEYS)} in this order, got {got}")
    for key in SYMBOLIC_KEYS:
        if state[key] not in _VALUES[key] or isinstance(state[key], bool):
            raise ValueError(f"symbolic state.{key}: must be one of {list(_VALUES[key])}, got {state[key]!r}")
    places = [state[f"{c}_block"] for c in COLORS]
    for side in ("slider_left", "slider_right"):
        if places.count(side) > 1:
            raise ValueError(f"symbolic state: two blocks on {side} ({places})")
    if state["grasped"] != places.count("grasped") or places.count("grasped") > 1:
        raise ValueError(f"symbolic state.grasped: {state['grasped']} but blocks are {places}")
    if places.count("stacked_top") != places.count("stacked_bottom") or places.count("stacked_top") > 1:
        raise ValueError(f"symbolic state: unmatched stack in {places}")
    if initial:
        for color, place in zip(COLORS, places, strict=True):
            if place not in INITIAL_BLOCK_PLACES:
                raise ValueError(f"symbolic state.{color}_block: a reset supports {list(INITIAL_BLOCK_PLACES)}, "
                                 f"got {place!r}")
        if places.count("table") > 2:
            raise ValueError("symbolic state: a reset has two table spots, got three blocks on the table")

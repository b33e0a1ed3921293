"""CALVIN's evaluation chains, reproduced exactly, and the reset-from-symbolic-state rule.

`get_sequences(1000)` returns the same 1000 `(initial_state, five_tasks)` pairs, in the same order,
as CALVIN's `calvin_agent.evaluation.multistep_sequences.get_sequences(1000)`: 192 symbolic initial
states, per-state chain counts from `np.array_split`, per-state rejection sampling under
`np.random.seed(i)` with `np.random.choice(tasks, 5, replace=False)`, then a shuffle under seed 0.
CALVIN runs the per-state draws in worker processes (84 s on 2 cores); here one process draws them
from the same legacy Mersenne-Twister streams (each a fresh `RandomState`, so the caller's global
numpy RNG is never touched) and checks them in vectorised batches, and the result is cached per
process.

`initial_condition_to_obs(state)` is CALVIN's `get_env_state_for_initial_condition`: the fixed
robot pose and a scene_obs whose block yaws and table spots are drawn under the FNV-1 seed of the
state (see `symbolic_state_seed`).

Run:
    python -m envs.sequences --num 1000 > chains.json
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import multiprocessing
import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from envs.symbolic import (
    NUM_TASKS,
    SYMBOLIC_KEYS,
    TASK_CATEGORIES,
    TASK_ORDER,
    next_state,
    validate_symbolic_state,
)

Chain = tuple[dict, tuple[str, ...]]
CHAIN_LEN = 5

# CALVIN's fixed evaluation robot pose (`get_env_state_for_initial_condition`): TCP xyz, TCP euler,
# gripper width, 7 arm joints, gripper action (open).
EVAL_ROBOT_OBS = np.array([
    0.02586889, -0.2313129, 0.5712808, 3.09045411, -0.02908596, 1.50013585, 0.07999963,
    -1.21779124, 1.03987629, 2.11978254, -2.34205014, -0.87015899, 1.64119093, 0.55344928, 1.0,
])
# World positions (m) of the block spots used when resetting to a symbolic state (scene D).
BLOCK_SLIDER_LEFT = np.array([-2.40851662e-01, 9.24044687e-02, 4.60990009e-01])
BLOCK_SLIDER_RIGHT = np.array([7.03416330e-02, 9.24044687e-02, 4.60990009e-01])
BLOCK_TABLE_SPOTS = (
    np.array([5.00000896e-02, -1.20000177e-01, 4.59990009e-01]),
    np.array([2.29995412e-01, -1.19995140e-01, 4.59990010e-01]),
)
BLOCK_YAW_RANGE = (np.pi / 2 - np.pi / 8, np.pi / 2 + np.pi / 8)
SLIDER_LEFT_STATE = 0.28  # m, base__slide when the symbolic slider is "left"
DRAWER_OPEN_STATE = 0.22  # m, base__drawer when the symbolic drawer is "open"
SWITCH_ON_STATE = 0.088  # m, base__switch when the symbolic lightbulb is on


def initial_states() -> list[dict]:
    """CALVIN's 192 symbolic initial states, in its `itertools.product` order."""
    choices = {
        "led": [0, 1], "lightbulb": [0, 1], "slider": ["right", "left"], "drawer": ["closed", "open"],
        "red_block": ["table", "slider_right", "slider_left"],
        "blue_block": ["table", "slider_right", "slider_left"],
        "pink_block": ["table", "slider_right", "slider_left"], "grasped": [0],
    }

    def keep(values: tuple) -> bool:
        return values.count("table") in (1, 2) and values.count("slider_right") < 2 and values.count("slider_left") < 2

    return [dict(zip(choices, values, strict=True)) for values in itertools.product(*choices.values()) if keep(values)]


def is_valid_chain(state: Mapping, tasks: Sequence[str]) -> bool:
    """CALVIN's `check_sequence`: each task has exactly one applicable alternative, categories differ."""
    current = tuple(state[k] for k in SYMBOLIC_KEYS)
    for name in tasks:
        if name not in TASK_CATEGORIES:
            raise ValueError(f"chain: unknown task {name!r} (CALVIN's 34 tasks: envs.symbolic.TASK_ORDER)")
        current = next_state(current, TASK_ORDER.index(name))
        if current is None:
            return False
    return len({TASK_CATEGORIES[name] for name in tasks}) == len(tasks)


@functools.lru_cache(maxsize=1)
def _transition_table() -> tuple[dict[tuple, int], np.ndarray, np.ndarray]:
    """Every symbolic state reachable in 5 tasks from CALVIN's initial states, as a lookup table.

    Returns:
        ids (state tuple -> row), table (S + 1, 34) int32 of next-state rows (row S is the absorbing
        "invalid" state), and categories (34,) int64.
    """
    ids: dict[tuple, int] = {}
    frontier = [tuple(s[k] for k in SYMBOLIC_KEYS) for s in initial_states()]
    for _ in range(CHAIN_LEN + 1):
        successors = []
        for state in frontier:
            if state in ids:
                continue
            ids[state] = len(ids)
            successors += [n for t in range(NUM_TASKS) if (n := next_state(state, t)) is not None]
        frontier = successors
    dead = len(ids)
    table = np.full((dead + 1, NUM_TASKS), dead, dtype=np.int32)
    for state, row in ids.items():
        for task in range(NUM_TASKS):
            following = next_state(state, task)
            table[row, task] = ids.get(following, dead) if following is not None else dead
    categories = np.array([TASK_CATEGORIES[name] for name in TASK_ORDER])
    return ids, table, categories


def _chains_for_state(state: dict, count: int, seed: int) -> list[tuple[str, ...]]:
    """CALVIN's `get_sequences_for_state2`: rejection-sample `count` valid chains under `seed`.

    Draws come in batches: every row of `block` is shuffled in place by the legacy `RandomState`,
    which consumes the Mersenne-Twister stream exactly as `np.random.choice(task_list, 5,
    replace=False)` (= `permutation(34)[:5]`) does after `np.random.seed(seed)`; the chains are
    then checked together. Drawing past the last needed chain is harmless: the stream is private.
    """
    ids, table, categories = _transition_table()
    rng = np.random.RandomState(seed)
    start = ids[tuple(state[k] for k in SYMBOLIC_KEYS)]
    dead = len(table) - 1
    chains: list[tuple[str, ...]] = []
    batch, drawn_total, valid_total = 4096, 0, 0
    while len(chains) < count:
        block = np.tile(np.arange(NUM_TASKS), (batch, 1))
        for _ in map(rng.shuffle, block):
            pass
        draws = block[:, :CHAIN_LEN]
        current = np.full(batch, start)
        for step in range(CHAIN_LEN):
            current = table[current, draws[:, step]]
        drawn = np.sort(categories[draws], axis=1)
        valid = (current != dead) & np.all(drawn[:, 1:] != drawn[:, :-1], axis=1)
        for row in draws[valid][: count - len(chains)]:
            chains.append(tuple(TASK_ORDER[t] for t in row))
        # Size the next batch from the acceptance rate seen so far, with 30% headroom.
        drawn_total, valid_total = drawn_total + batch, valid_total + int(valid.sum())
        batch = int(np.clip(1.3 * (count - len(chains)) * drawn_total / (valid_total + 1), 1024, 1 << 17))
    return chains


_CACHE: dict[int, tuple[tuple[tuple, tuple[str, ...]], ...]] = {}


def _draw_state(args: tuple[dict, int, int]) -> list[tuple[str, ...]]:
    return _chains_for_state(*args)


def _generate(num_sequences: int, num_workers: int) -> tuple[tuple[tuple, tuple[str, ...]], ...]:
    states = initial_states()
    counts = [len(part) for part in np.array_split(range(num_sequences), len(states))]
    jobs = [(state, count, index) for index, (state, count) in enumerate(zip(states, counts, strict=True))]
    if num_workers > 1:
        # spawn, not fork: the caller may hold pybullet clients or Ray threads.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
            per_state = list(pool.map(_draw_state, jobs))
    else:
        per_state = [_draw_state(job) for job in jobs]
    pairs = [(tuple(state.items()), chain) for (state, _, _), chains in zip(jobs, per_state, strict=True)
             for chain in chains]
    # CALVIN shuffles the list of pairs under a fresh seed-0 global RNG (its draws ran in workers).
    np.random.RandomState(0).shuffle(pairs)
    return tuple(pairs)


def get_sequences(num_sequences: int = 1000, *, num_workers: int = 1) -> list[Chain]:
    """CALVIN's `get_sequences(num_sequences)`: the same chains in the same order, for any count.

    The result is cached per process (about 10 s for 1000 chains on one core of a laptop-class CPU;
    CALVIN needs 84 s on two).

    Args:
        num_sequences: how many chains to generate (1000 for the benchmark). As in CALVIN, the list
            for N < 1000 is not the prefix of the 1000 list; take `get_sequences(1000)[:N]` for that.
        num_workers: processes drawing the per-state chains (the result does not depend on it).

    Returns:
        A fresh list of `(initial_state, tasks)`: a symbolic state dict (keys `SYMBOLIC_KEYS`) and
        a tuple of 5 task names.
    """
    if isinstance(num_sequences, bool) or not isinstance(num_sequences, int) or num_sequences < 1:
        raise ValueError(f"num_sequences: must be a positive integer, got {num_sequences!r}")
    if num_sequences not in _CACHE:
        _CACHE[num_sequences] = _generate(num_sequences, max(1, num_workers))
    return [(dict(state), chain) for state, chain in _CACHE[num_sequences]]


def fnv1_32(text: str) -> int:
    """FNV-1 32-bit (initial hash 0) over the UTF-16-LE bytes of `text`, as pyhash's `fnv1_32()(text)`."""
    value = 0
    for byte in text.encode("utf-16-le"):
        value = (value * 0x01000193) & 0xFFFFFFFF
        value ^= byte
    return value


def symbolic_state_seed(state: Mapping) -> int:
    """CALVIN's per-chain seed: `fnv1_32(str(state.values()))`, e.g. 2138410836 for chain 0."""
    return fnv1_32(str(dict(state).values()))


def initial_condition_to_obs(state: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """CALVIN's `get_env_state_for_initial_condition` for scene D's block order (red, blue, pink).

    Args:
        state: a symbolic state whose blocks are each on the table or a slider side.

    Returns:
        `robot_obs` (15,) float64 and `scene_obs` (24,) float64 in scene D's layout.
    """
    validate_symbolic_state(state, initial=True)
    rng = np.random.RandomState(symbolic_state_seed(state))
    table = list(BLOCK_TABLE_SPOTS)
    rng.shuffle(table)
    scene_obs = np.zeros(24)
    scene_obs[0] = SLIDER_LEFT_STATE if state["slider"] == "left" else 0.0
    scene_obs[1] = DRAWER_OPEN_STATE if state["drawer"] == "open" else 0.0
    scene_obs[3] = SWITCH_ON_STATE if state["lightbulb"] == 1 else 0.0
    scene_obs[4] = state["lightbulb"]
    scene_obs[5] = state["led"]
    spots = {"slider_right": BLOCK_SLIDER_RIGHT, "slider_left": BLOCK_SLIDER_LEFT}
    blue_table = table[1] if state["red_block"] == "table" else table[0]
    for offset, block, table_spot in ((6, "red_block", table[0]), (12, "blue_block", blue_table),
                                      (18, "pink_block", table[1])):
        scene_obs[offset:offset + 3] = spots.get(state[block], table_spot)
        scene_obs[offset + 5] = rng.uniform(*BLOCK_YAW_RANGE)
    return EVAL_ROBOT_OBS.copy(), scene_obs


def main(argv: Sequence[str] | None = None) -> None:
    """Print the first N chains as JSON: a list of `[initial_state, [five task names]]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=1000, help="number of chains (CALVIN's benchmark: 1000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes drawing chains")
    args = parser.parse_args(argv)
    chains = get_sequences(args.num, num_workers=args.workers)
    json.dump([[state, list(tasks)] for state, tasks in chains], sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

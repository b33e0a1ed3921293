"""CALVIN's evaluation chains: values of CALVIN's own 1000 (chain 0, its seed, task counts) and the reset rule."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from envs.sequences import (
    EVAL_ROBOT_OBS,
    fnv1_32,
    get_sequences,
    initial_condition_to_obs,
    initial_states,
    is_valid_chain,
    symbolic_state_seed,
)
from envs.symbolic import TASK_CATEGORIES, TASK_ORDER, validate_symbolic_state

CHAIN0_STATE = {"led": 1, "lightbulb": 1, "slider": "left", "drawer": "open", "red_block": "slider_left",
                "blue_block": "table", "pink_block": "slider_right", "grasped": 0}
CHAIN0_TASKS = ("rotate_blue_block_right", "move_slider_right", "lift_red_block_slider", "place_in_slider",
                "turn_off_lightbulb")


@pytest.fixture(scope="module")
def chains():
    return get_sequences(1000)


def test_chain_zero_and_its_seed_match_calvin(chains):
    state, tasks = chains[0]
    assert state == CHAIN0_STATE and list(state) == list(CHAIN0_STATE)
    assert tasks == CHAIN0_TASKS
    assert symbolic_state_seed(state) == 2138410836


def test_task_frequencies_match_calvin(chains):
    counts = Counter(task for _, tasks in chains for task in tasks)
    assert len(chains) == 1000 and sum(counts.values()) == 5000
    assert counts["place_in_slider"] == 398 and counts["open_drawer"] == 379
    assert counts.most_common(2) == [("place_in_slider", 398), ("open_drawer", 379)]
    assert all(15 <= counts[f"lift_{c}_block_drawer"] <= 25 for c in ("red", "blue", "pink"))


def test_every_chain_is_valid_and_states_are_calvins(chains):
    states = initial_states()
    assert len(states) == 192
    keys = {tuple(s.items()) for s in states}
    per_state = Counter(tuple(state.items()) for state, _ in chains)
    assert set(per_state) == keys and sorted(Counter(per_state.values()).items()) == [(5, 152), (6, 40)]
    for state, tasks in chains:
        assert is_valid_chain(state, tasks)
        assert len({TASK_CATEGORIES[t] for t in tasks}) == 5


def test_generation_is_cached_fresh_and_leaves_global_rng_alone():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = get_sequences(1000)
    first[0][0]["led"] = 7  # a caller mutating its copy must not change the cache
    assert get_sequences(1000)[0][0]["led"] == 1
    assert np.array_equal(np.random.get_state()[1], before)


def test_fnv1_matches_pyhash_test_vectors():
    assert fnv1_32("test") == 3910690890
    assert fnv1_32(str(CHAIN0_STATE.values())) == 2138410836


def test_reset_rule_for_chain_zero():
    robot_obs, scene_obs = initial_condition_to_obs(CHAIN0_STATE)
    assert np.array_equal(robot_obs, EVAL_ROBOT_OBS) and robot_obs.shape == (15,)
    assert scene_obs.shape == (24,)
    assert scene_obs[0] == 0.28 and scene_obs[1] == 0.22 and scene_obs[3] == 0.088
    assert scene_obs[4] == 1 and scene_obs[5] == 1
    np.testing.assert_allclose(scene_obs[6:9], [-0.2409, 0.0924, 0.461], atol=1e-4)  # red on slider_left
    np.testing.assert_allclose(scene_obs[18:21], [0.0703, 0.0924, 0.461], atol=1e-4)  # pink on slider_right
    assert scene_obs[12:14].tolist() in ([0.0500000896, -0.120000177], [0.229995412, -0.11999514])
    for yaw in scene_obs[[11, 17, 23]]:
        assert np.pi / 2 - np.pi / 8 <= yaw <= np.pi / 2 + np.pi / 8
    again = initial_condition_to_obs(dict(CHAIN0_STATE))[1]
    assert np.array_equal(scene_obs, again)


def test_two_table_blocks_get_both_spots():
    state = dict(CHAIN0_STATE, red_block="table", blue_block="slider_left", pink_block="table")
    scene_obs = initial_condition_to_obs(state)[1]
    spots = sorted([tuple(scene_obs[6:8]), tuple(scene_obs[18:20])])
    assert spots == sorted([(0.0500000896, -0.120000177), (0.229995412, -0.11999514)])


@pytest.mark.parametrize(("change", "message"), [
    ({"red_block": "slider_right"}, "two blocks on slider_right"),
    ({"led": 2}, "led"),
    ({"grasped": 1}, "grasped"),
    ({"red_block": "drawer"}, "red_block"),
    ({"red_block": "table", "pink_block": "table", "blue_block": "table"}, "three blocks"),
])
def test_inconsistent_symbolic_states_are_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        initial_condition_to_obs(dict(CHAIN0_STATE, **change))


def test_symbolic_key_order_matters_and_is_checked():
    reordered = dict(reversed(list(CHAIN0_STATE.items())))
    with pytest.raises(ValueError, match="keys must be"):
        validate_symbolic_state(reordered)


def test_unknown_task_in_chain_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task 'fly_away'"):
        is_valid_chain(CHAIN0_STATE, ["fly_away"])
    assert len(TASK_ORDER) == 34


def test_cli_prints_chains_as_json():
    out = subprocess.run([sys.executable, "-m", "envs.sequences", "--num", "3", "--workers", "1"],
                         check=True, capture_output=True, text=True).stdout
    chains = json.loads(out)
    assert len(chains) == 3 and all(len(tasks) == 5 and isinstance(state, dict) for state, tasks in chains)
    assert [[s, list(t)] for s, t in get_sequences(3)] == chains

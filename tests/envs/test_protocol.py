"""CALVIN's evaluation loop on the real PlayTable and oracle, and its metrics.

The policy here is test-only and privileged: for the tasks whose goal is a pure state change
(doors, lights, pushing or turning a block) it writes the goal state into the simulator on its
first step, so the real loop, env and oracle see a solved subtask; any other task it cannot solve.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from envs.playtable import PlayTableEnv
from envs.protocol import (
    EP_LEN,
    ChainResult,
    ChainRollout,
    SubtaskResult,
    evaluate_chains,
    format_summary,
    run_chain,
    summarize,
    write_results_json,
)
from envs.sequences import get_sequences
from envs.tasks import load_eval_instructions

REST = np.array([0, 0, 0, 0, 0, 0, 1.0])
BLOCKS = {"red": 6, "blue": 12, "pink": 18}  # scene D's scene_obs offsets
EDITS = {"move_slider_left": {0: 0.28}, "move_slider_right": {0: 0.0}, "open_drawer": {1: 0.22},
         "close_drawer": {1: 0.0}, "turn_on_lightbulb": {3: 0.088, 4: 1}, "turn_off_lightbulb": {3: 0.0, 4: 0},
         "turn_on_led": {5: 1}, "turn_off_led": {5: 0}}
SHIFTS = {"push_{}_block_right": (0, 0.12), "push_{}_block_left": (0, -0.12),
          "rotate_{}_block_right": (5, -1.2), "rotate_{}_block_left": (5, 1.2)}
for _colour, _offset in BLOCKS.items():
    for _pattern, (_axis, _delta) in SHIFTS.items():
        EDITS[_pattern.format(_colour)] = {"shift": (_offset + _axis, _delta)}


class GoalWritingPolicy:
    """Solves state-change tasks by writing the goal into the simulator; idles on anything else."""

    def __init__(self, env: PlayTableEnv) -> None:
        self.env, self.resets, self.pending = env, 0, False
        self.tasks = {sentence: task for task, sentence in load_eval_instructions().items()}

    def reset(self) -> None:
        self.resets += 1
        self.pending = True

    def step(self, obs: dict, goal: str) -> np.ndarray:
        edit = EDITS.get(self.tasks[goal])
        if edit and self.pending:
            scene_obs = self.env.get_obs()["scene_obs"].copy()
            for index, value in edit.items():
                if index == "shift":
                    scene_obs[value[0]] += value[1]
                else:
                    scene_obs[index] = value
            self.env.reset(self.env.get_obs()["robot_obs"], scene_obs)
        self.pending = False
        return REST


def solvable_prefix(tasks) -> int:
    k = 0
    while k < len(tasks) and tasks[k] in EDITS:
        k += 1
    return k


@pytest.fixture(scope="module")
def chains():
    return get_sequences(1000)


@pytest.fixture(scope="module")
def env():
    environment = PlayTableEnv("D", cameras=False)
    yield environment
    environment.close()


def pick(chains, per_prefix: int = 1) -> list[tuple[int, tuple]]:
    """Chain indices with 0, 1, 2, 3 and 4 solvable leading subtasks."""
    picked, counts = [], {}
    for index, chain in enumerate(chains):
        k = solvable_prefix(chain[1])
        if counts.get(k, 0) < per_prefix:
            counts[k] = counts.get(k, 0) + 1
            picked.append((index, chain))
    return sorted(picked, key=lambda item: solvable_prefix(item[1][1]))


def test_chain_counts_leading_successes_and_stops_at_first_failure(env, chains):
    picked = pick(chains)
    assert [solvable_prefix(c[1]) for _, c in picked] == [0, 1, 2, 3, 4]
    for index, chain in picked:
        policy = GoalWritingPolicy(env)
        result = run_chain(env, policy, chain, index=index, ep_len=4)
        k = solvable_prefix(chain[1])
        assert result.index == index and result.tasks == tuple(chain[1]) and result.completed == k
        assert [s.success for s in result.subtasks] == [True] * k + [False]
        assert [s.steps for s in result.subtasks] == [1] * k + [4]
        assert policy.resets == k + 1  # policy.reset() before every attempted subtask, never after the failure


def test_interleaved_rollouts_on_many_envs_equal_sequential_runs(env, chains):
    picked = [chain for _, chain in pick(chains)[1:4]]
    sequential = [run_chain(env, GoalWritingPolicy(env), chain, index=i, ep_len=3) for i, chain in enumerate(picked)]
    envs = [PlayTableEnv("D", cameras=False) for _ in picked]
    try:
        rollouts = [ChainRollout(e, chain, index=i, ep_len=3) for i, (e, chain) in enumerate(zip(envs, picked))]  # noqa: B905
        policies = [GoalWritingPolicy(e) for e in envs]
        while not all(r.done for r in rollouts):  # one "batched" policy call per round over the live rollouts
            live = [(r, p) for r, p in zip(rollouts, policies, strict=True) if not r.done]
            for rollout, policy in live:
                if rollout.take_subtask_start():
                    policy.reset()
            actions = [policy.step(rollout.obs, rollout.instruction) for rollout, policy in live]
            for (rollout, _), action in zip(live, actions, strict=True):
                rollout.advance(action)
        assert [r.result() for r in rollouts] == sequential
    finally:
        for e in envs:
            e.close()


def test_rollout_guards(env, chains):
    with pytest.raises(ValueError, match="unknown"):
        ChainRollout(env, (chains[0][0], ["open_drawer", "fly", "close_drawer", "turn_on_led", "turn_off_led"]))
    rollout = ChainRollout(env, chains[0], ep_len=1)
    with pytest.raises(RuntimeError, match="still running"):
        rollout.result()
    rollout.advance(REST)  # the idle first subtask fails after its one step
    assert rollout.done and rollout.result().completed == 0
    with pytest.raises(RuntimeError, match="ended"):
        rollout.advance(REST)
    assert EP_LEN == 360


def calvin_metrics(results: list[int], sequences: list[tuple]) -> dict:
    """CALVIN's `count_success` and `print_and_save` counting, written out as in CALVIN."""
    chain_sr = {i: sum(r >= i for r in results) / len(results) for i in range(1, 6)}
    success, total = {}, {}
    for result, (_, tasks) in zip(results, sequences, strict=True):
        for task in tasks[:result]:
            success[task] = success.get(task, 0) + 1
            total[task] = total.get(task, 0) + 1
        if result < len(tasks):
            total[tasks[result]] = total.get(tasks[result], 0) + 1
            success.setdefault(tasks[result], 0)
    return {"avg_seq_len": float(np.mean(results)), "chain_sr": chain_sr,
            "task_info": {t: {"success": success[t], "total": total[t]} for t in total}}


def synthetic_results(chains, n: int) -> list[ChainResult]:
    rng = random.Random(0)
    results = []
    for index, (state, tasks) in enumerate(chains[:n]):
        completed = rng.randint(0, 5)
        subtasks = [SubtaskResult(t, True, rng.randint(1, 360)) for t in tasks[:completed]]
        if completed < 5:
            subtasks.append(SubtaskResult(tasks[completed], False, 360))
        results.append(ChainResult(index, state, tuple(tasks), tuple(subtasks)))
    return results


def test_summary_matches_calvin_and_ignores_order_and_sharding(chains):
    results = synthetic_results(chains, 200)
    summary = summarize(results)
    expected = calvin_metrics([r.completed for r in results], chains[:200])
    assert summary.num_chains == 200 and summary.avg_seq_len == pytest.approx(expected["avg_seq_len"])
    assert summary.chain_sr == pytest.approx(expected["chain_sr"])
    assert summary.task_info == expected["task_info"]
    shuffled = results[:]
    random.Random(1).shuffle(shuffled)
    shards = [shuffled[i::3] for i in range(3)]  # e.g. three workers returning in any order
    assert summarize([r for shard in reversed(shards) for r in shard]) == summary
    with pytest.raises(ValueError, match="unique"):
        summarize(results + results[:1])
    with pytest.raises(ValueError, match="at least one"):
        summarize([])


def test_results_json_has_calvins_layout(tmp_path, chains):
    path = tmp_path / "eval" / "results.json"
    write_results_json(summarize(synthetic_results(chains, 10)), path, checkpoint="epoch=1")
    write_results_json(summarize(synthetic_results(chains, 20)), path, checkpoint="epoch=2")
    data = json.loads(path.read_text())
    assert list(data) == ["epoch=1", "epoch=2"]
    for entry in data.values():
        assert set(entry) == {"avg_seq_len", "chain_sr", "task_info"}
        assert list(entry["chain_sr"]) == ["1", "2", "3", "4", "5"]
        assert all(set(v) == {"success", "total"} for v in entry["task_info"].values())
    assert "Average successful sequence length" in format_summary(summarize(synthetic_results(chains, 5)))


def test_evaluate_chains_runs_them_in_order(env, chains):
    results = evaluate_chains(env, GoalWritingPolicy(env), chains[:3], ep_len=2)
    assert [r.index for r in results] == [0, 1, 2]
    assert [r.completed for r in results] == [solvable_prefix(c[1]) for c in chains[:3]]

"""CALVIN's long-horizon evaluation protocol (`calvin_agent/evaluation/evaluate_policy.py`), reusable.

Per chain: reset the env to the chain's symbolic state (`envs.sequences.initial_condition_to_obs`),
then for each of its 5 subtasks: `policy.reset()`, `start_info = env.get_info()`, and up to
`EP_LEN` = 360 steps of `policy.step(obs, instruction)` -> `env.step` -> the oracle on
`(start_info, info, {subtask})`, stopping at the first success. The env is not reset between
subtasks and the chain stops at its first failed subtask. Instructions are CALVIN's evaluation
sentences (`new_playtable_validation.yaml`). As in CALVIN, the reset state is laid out in scene D's
block order (red, blue, pink): the protocol is meant for scene D (ABC->D, D->D).

Built for parallel drivers: `ChainRollout` is the per-chain loop as a resumable state machine (a
driver can step many envs and batch one policy call across them), `run_chain` drives one with one
policy, and `summarize` turns `ChainResult`s from any number of workers, in any order, into the
same metrics; `write_results_json` writes CALVIN's `results.json`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.base import Policy, SimEnv
from envs.sequences import initial_condition_to_obs
from envs.symbolic import TASK_ORDER
from envs.tasks import TaskOracle, load_eval_instructions

EP_LEN = 360  # steps per subtask (12 s at 30 Hz)
CHAIN_LEN = 5


@dataclass(frozen=True)
class SubtaskResult:
    """One attempted subtask: its task, whether the oracle saw it done, and the env steps it took."""

    task: str
    success: bool
    steps: int


@dataclass(frozen=True)
class ChainResult:
    """One evaluated chain; `subtasks` holds the attempted ones (up to and including a failure)."""

    index: int
    initial_state: dict
    tasks: tuple[str, ...]
    subtasks: tuple[SubtaskResult, ...]

    @property
    def completed(self) -> int:
        """Subtasks solved in a row: CALVIN's per-chain result, 0-5."""
        return sum(s.success for s in self.subtasks)


class ChainRollout:
    """One chain on one env, advanced one control step at a time by whoever holds the policy.

    Usage (what `run_chain` does; a batched driver does the same across many rollouts):
        rollout = ChainRollout(env, chain)
        while not rollout.done:
            if rollout.take_subtask_start():
                policy.reset()
            rollout.advance(policy.step(rollout.obs, rollout.instruction))
        result = rollout.result()
    """

    def __init__(self, env: SimEnv, chain: tuple[Mapping, Sequence[str]], *, index: int = 0,
                 oracle: TaskOracle | None = None, instructions: Mapping[str, str] | None = None,
                 ep_len: int = EP_LEN) -> None:
        """Reset `env` to the chain's initial state and start its first subtask.

        Args:
            env: a CALVIN-interface env (PlayTable or the real calvin_env through `envs.calvin`).
            chain: `(initial_state, tasks)` as produced by `envs.sequences.get_sequences`.
            index: the chain's position in the evaluated list (kept in the result).
            oracle: the task oracle (CALVIN's, loaded once per process, by default).
            instructions: task -> sentence (CALVIN's evaluation sentences by default).
            ep_len: step budget per subtask.
        """
        state, tasks = chain
        self.oracle = oracle or _default_oracle()
        self.instructions = dict(instructions or _default_instructions())
        unknown = [t for t in tasks if t not in self.oracle.tasks or t not in self.instructions]
        if unknown or len(tasks) != CHAIN_LEN:
            raise ValueError(f"chain {index}: expected {CHAIN_LEN} known tasks, got {list(tasks)} (unknown: {unknown})")
        if ep_len < 1:
            raise ValueError(f"ep_len: must be >= 1, got {ep_len}")
        self.env, self.index, self.ep_len = env, index, ep_len
        self.initial_state, self.tasks = dict(state), tuple(tasks)
        self._done: list[SubtaskResult] = []
        # The obs of the last reset/step equals a fresh `get_obs()`: nothing moved in between.
        self.obs = env.reset(*initial_condition_to_obs(self.initial_state))
        self._start_subtask()

    def _start_subtask(self) -> None:
        self.start_info = self.env.get_info()
        self.steps = 0
        self._fresh = True

    @property
    def done(self) -> bool:
        """The chain ended: all subtasks solved or one failed."""
        return len(self._done) == CHAIN_LEN or any(not s.success for s in self._done)

    @property
    def subtask(self) -> str:
        """The task being attempted."""
        return self.tasks[len(self._done)]

    @property
    def instruction(self) -> str:
        """The sentence the policy is given for the current subtask."""
        return self.instructions[self.subtask]

    def take_subtask_start(self) -> bool:
        """True exactly once per subtask, before its first step: the driver must call `policy.reset()`."""
        fresh, self._fresh = self._fresh, False
        return fresh

    def advance(self, action: Any) -> bool:
        """Step the env with `action` and check the current subtask; returns True when the chain ended."""
        if self.done:
            raise RuntimeError(f"chain {self.index} has ended; no more actions")
        self.obs, _, _, info = self.env.step(action)
        self.steps += 1
        solved = bool(self.oracle.get_task_info_for_set(self.start_info, info, {self.subtask}))
        if solved or self.steps >= self.ep_len:
            self._done.append(SubtaskResult(self.subtask, solved, self.steps))
            if not self.done:
                self._start_subtask()
        return self.done

    def result(self) -> ChainResult:
        """The outcome of the chain (only once it has ended)."""
        if not self.done:
            raise RuntimeError(f"chain {self.index} is still running")
        return ChainResult(self.index, self.initial_state, self.tasks, tuple(self._done))


def run_chain(env: SimEnv, policy: Policy, chain: tuple[Mapping, Sequence[str]], **kwargs: Any) -> ChainResult:
    """CALVIN's `evaluate_sequence` for one chain; `kwargs` go to `ChainRollout` (index, oracle, ...)."""
    rollout = ChainRollout(env, chain, **kwargs)
    while not rollout.done:
        if rollout.take_subtask_start():
            policy.reset()
        rollout.advance(policy.step(rollout.obs, rollout.instruction))
    return rollout.result()


def evaluate_chains(env: SimEnv, policy: Policy, chains: Sequence[tuple[Mapping, Sequence[str]]], *,
                    ep_len: int = EP_LEN) -> list[ChainResult]:
    """Run `chains` one after another on one env (CALVIN's single-process loop); result i is chain i."""
    return [run_chain(env, policy, chain, index=i, ep_len=ep_len) for i, chain in enumerate(chains)]


@dataclass(frozen=True)
class EvalSummary:
    """CALVIN's metrics: mean chain length, P(completed >= i) for i = 1..5, per-task success/total."""

    num_chains: int
    avg_seq_len: float
    chain_sr: dict[int, float]
    task_info: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_calvin(self) -> dict:
        """The per-checkpoint entry of CALVIN's results.json."""
        return {"avg_seq_len": self.avg_seq_len, "chain_sr": dict(self.chain_sr), "task_info": self.task_info}


def summarize(results: Iterable[ChainResult]) -> EvalSummary:
    """Metrics of a set of chains, independent of their order and of which worker ran them.

    Raises:
        ValueError: no results, or two results with the same chain index.
    """
    results = sorted(results, key=lambda r: r.index)
    indices = [r.index for r in results]
    if not results or len(set(indices)) != len(indices):
        raise ValueError(f"results: need at least one chain and unique chain indices, got {indices}")
    completed = np.array([r.completed for r in results])
    chain_sr = {i: float(np.mean(completed >= i)) for i in range(1, CHAIN_LEN + 1)}
    counts: dict[str, dict[str, int]] = {}
    for subtask in (s for r in results for s in r.subtasks):
        entry = counts.setdefault(subtask.task, {"success": 0, "total": 0})
        entry["success"] += int(subtask.success)
        entry["total"] += 1
    order = {name: i for i, name in enumerate(TASK_ORDER)}
    task_info = {task: counts[task] for task in sorted(counts, key=lambda t: (order.get(t, len(order)), t))}
    return EvalSummary(len(results), float(completed.mean()), chain_sr, task_info)


def write_results_json(summary: EvalSummary, path: str | Path, checkpoint: str = "0") -> Path:
    """Add `summary` under key `checkpoint` to CALVIN's `results.json` at `path` (kept entries stay)."""
    path = Path(path)
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**previous, checkpoint: summary.to_calvin()}, indent=2))
    return path


def format_summary(summary: EvalSummary) -> str:
    """CALVIN's printout: average length, success for i instructions in a row, per-task rates."""
    lines = [f"Average successful sequence length: {summary.avg_seq_len:.3f} ({summary.num_chains} chains)",
             "Success rates for i instructions in a row:"]
    lines += [f"{i}: {rate * 100:.1f}%" for i, rate in summary.chain_sr.items()]
    lines += [f"{task}: {v['success']} / {v['total']} |  SR: {v['success'] / v['total'] * 100:.1f}%"
              for task, v in summary.task_info.items()]
    return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def _default_oracle() -> TaskOracle:
    return TaskOracle()


@functools.lru_cache(maxsize=1)
def _default_instructions() -> dict[str, str]:
    return load_eval_instructions()

"""How well the experts do: per-task trials and CALVIN's long-horizon protocol, in scene D.

Per-task trials: trial k of a task starts from the k-th place the task appears in CALVIN's 1000
evaluation chains (fewest preceding subtasks first): the env is reset to that chain's initial
state, the preceding subtasks are played to their end by the experts (a trial whose prefix fails
is skipped and counted), then the task runs as in the protocol: `ExpertPolicy` with the evaluation
sentence, at most 360 steps, success at the oracle's first firing. Tasks never valid in an initial
state (place, stack, unstack, lift from the drawer) so start from realistic protocol states.

Protocol: `ExpertPolicy` through `envs.protocol` on the first N of CALVIN's 1000 chains.

Run (state-only, ~2 ms a step on one core; `--workers` processes share the trials):
    python -m envs.experts.evaluate --trials 20 --chains 100 --workers 2 --out expert_eval.json
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from envs.experts.policy import ExpertPolicy, task_plan
from envs.playtable import PlayTableEnv
from envs.protocol import EP_LEN, format_summary, run_chain, summarize
from envs.sequences import get_sequences, initial_condition_to_obs
from envs.symbolic import TASK_ORDER
from envs.tasks import TaskOracle, load_eval_instructions


@dataclass(frozen=True)
class TaskTrials:
    """One task's trials: successes among those run, and per trial the steps taken (ep_len when failed).

    `instead`: per failed trial, the other tasks the oracle finds done by its end (what the policy did instead).
    """

    task: str
    successes: int
    # trials run (fewer than asked only when CALVIN's chains ran out of starts with a working prefix)
    trials: int
    # starts whose expert-played prefix failed (replaced by the next start, not counted as trials)
    skipped: int
    steps: tuple[int, ...]
    instead: tuple[tuple[str, ...], ...] = ()

    @property
    def instead_counts(self) -> dict[str, int]:
        """Task -> failed trials that ended with it done, most frequent first."""
        counts: dict[str, int] = {}
        for tasks in self.instead:
            for task in tasks:
                counts[task] = counts.get(task, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def rate(self) -> float:
        """Success rate in [0, 1] over the trials run."""
        return self.successes / self.trials if self.trials else 0.0

    @property
    def mean_steps(self) -> float:
        """Mean steps per trial run."""
        return float(np.mean(self.steps)) if self.steps else 0.0


def trial_starts(task: str, count: int) -> list[tuple[dict, tuple[str, ...], int]]:
    """(initial state, chain, position of `task`) for `count` occurrences, shortest prefixes first.

    Occurrences come from CALVIN's 1000 chains, then (lift from the drawer is rare: ~20 each) from
    the chains `get_sequences(2000)` adds to them.
    """
    starts = []
    for chains in _chain_sources():
        places = sorted((tasks.index(task), i) for i, (_, tasks) in enumerate(chains) if task in tasks)
        starts += [(chains[i][0], chains[i][1], position) for position, i in places]
        if len(starts) >= count:
            break
    return starts[:count]


def _chain_sources() -> Iterator[list]:
    """CALVIN's 1000 chains, then the extra ones: generated only when asked for (seconds each)."""
    yield get_sequences(1000)
    yield _extra_chains()


def _extra_chains() -> list:
    """`get_sequences(2000)` less CALVIN's 1000 chains (which it contains)."""
    known = {(str(state), tasks) for state, tasks in get_sequences(1000)}
    return [(state, tasks) for state, tasks in get_sequences(2000) if (str(state), tasks) not in known]


def reach_trial_starts(env: object, oracle: TaskOracle, task: str, count: int,
                       starts: Sequence[tuple[dict, tuple[str, ...], int]] | None = None) -> Iterator[int]:
    """Put `env` at the start of each trial of `task` in turn (see the module docstring).

    Yields, once the env is there, how many prefixes failed before this trial; stops after `count` trials
    or when the occurrences run out. Any policy can then attempt the task from the env's state.
    `starts` = `trial_starts(task, 2 * count)`, computed here when not given (seconds: CALVIN's chains).
    """
    yielded = skipped = 0
    for state, tasks, position in trial_starts(task, 2 * count) if starts is None else starts:
        if yielded == count:
            return
        env.reset(*initial_condition_to_obs(state))
        if all(_play_to_end(env, oracle, done) for done in tasks[:position]):
            yielded += 1
            yield skipped
        else:
            skipped += 1


def run_policy_trials(env: object, policy: object, task: str, count: int, *, oracle: TaskOracle, instruction: str,
                      ep_len: int = EP_LEN, starts: Sequence[tuple[dict, tuple[str, ...], int]] | None = None,
                      ) -> TaskTrials:
    """Up to `count` trials of `task` by `policy` in `env`, from the trial starts of the module docstring."""
    outcomes, skipped = [], 0
    for failed_before in reach_trial_starts(env, oracle, task, count, starts):
        outcomes.append(run_subtask(env, policy, oracle, task, instruction, ep_len))
        skipped = failed_before
    return TaskTrials(task, sum(ok for ok, _, _ in outcomes), len(outcomes), skipped,
                      tuple(n for _, n, _ in outcomes), tuple(other for ok, _, other in outcomes if not ok))


def run_task_trials(task: str, count: int, scene: str = "D") -> TaskTrials:
    """The expert's `count` trials of `task` (state only); extra occurrences replace failed prefixes."""
    with PlayTableEnv(scene, cameras=False) as env:
        return run_policy_trials(env, ExpertPolicy(env), task, count, oracle=TaskOracle(),
                                 instruction=load_eval_instructions()[task])


def run_subtask(env: object, policy: object, oracle: TaskOracle, task: str, instruction: str,
                ep_len: int = EP_LEN) -> tuple[bool, int, tuple[str, ...]]:
    """One subtask exactly as `envs.protocol` runs it: (solved, steps taken, other tasks done by the end).

    The last item is empty for a solved subtask; for a failed one it names what the policy did instead
    (the oracle between the start and the final state).
    """
    policy.reset()
    obs, start = env.get_obs(), env.get_info()
    for steps in range(1, ep_len + 1):
        obs, _, _, info = env.step(policy.step(obs, instruction))
        if oracle.get_task_info_for_set(start, info, {task}):
            return True, steps, ()
    return False, ep_len, tuple(sorted(oracle.get_task_info(start, info)))


def _play_to_end(env: object, oracle: TaskOracle, task: str) -> bool:
    start, success = env.get_info(), False
    for steps, action in enumerate(task_plan(task, env)):
        if steps >= EP_LEN:
            break
        success |= bool(oracle.get_task_info_for_set(start, env.step(action)[3], {task}))
    return success


def run_protocol(num_chains: int, scene: str = "D", first: int = 0) -> list:
    """`ExpertPolicy` through `envs.protocol` on CALVIN's chains [first, first + num_chains)."""
    chains = get_sequences(1000)
    with PlayTableEnv(scene, cameras=False) as env:
        policy = ExpertPolicy(env)
        return [run_chain(env, policy, chains[i], index=i) for i in range(first, first + num_chains)]


def _shards(total: int, workers: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, total, workers + 1).astype(int)
    return [(int(a), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def evaluate_experts(tasks: Sequence[str], trials: int, chains: int, workers: int) -> dict:
    """Per-task trials and the protocol over `chains` chains, spread over `workers` processes."""
    with ProcessPoolExecutor(max_workers=workers) as pool:
        per_task = list(pool.map(run_task_trials, tasks, [trials] * len(tasks)))
        shards = [pool.submit(run_protocol, n, "D", first) for first, n in _shards(chains, workers)] if chains else []
        results = [r for shard in shards for r in shard.result()]
    report = {"tasks": {t.task: {**asdict(t), "rate": t.rate, "mean_steps": t.mean_steps} for t in per_task}}
    if results:
        summary = summarize(results)
        report["protocol"] = {**summary.to_calvin(), "num_chains": summary.num_chains}
        report["protocol_text"] = format_summary(summary)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    """Print (and optionally write as JSON) per-task success rates and the protocol's metrics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per task")
    parser.add_argument("--chains", type=int, default=100, help="evaluation chains for the protocol (0: none)")
    parser.add_argument("--tasks", nargs="*", default=list(TASK_ORDER), choices=TASK_ORDER, metavar="TASK")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    report = evaluate_experts(args.tasks, args.trials, args.chains, args.workers)
    for name, t in report["tasks"].items():
        print(f"{name}: {t['successes']} / {t['trials']} ({t['rate']:.0%}), skipped prefixes {t['skipped']}, "
              f"{t['mean_steps']:.0f} steps")
    if "protocol_text" in report:
        print(report["protocol_text"])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()

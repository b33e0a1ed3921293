"""Single-task success of a policy: each task alone, from the same evaluation starts the experts are measured on.

Trial k of a task starts where the experts' trials start (`envs.experts.evaluate.reach_trial_starts`): the
k-th place the task appears in CALVIN's evaluation chains, fewest preceding subtasks first, the env reset
to that chain's initial state and the preceding subtasks played by the experts (a failed prefix is
skipped and counted). The policy then gets CALVIN's evaluation sentence and runs as in the protocol
(`run_subtask`: at most `ep_len` = 360 steps, success at the oracle's first firing). So every one of the
34 tasks, place/stack included, is tried from realistic protocol states, and a policy's figures compare
directly with the experts'. Starts are deterministic, so any split of tasks over workers gives the same
figures.

    trials = run_task_trials(env, policy, "open_drawer", trials=20)            # one env, one policy
    results = evaluate_tasks("artifacts/tune/model", ARTICULATED, trials=20, scene="D", workers=2)  # Ray tasks
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from envs.base import Policy, SimEnv
from envs.experts.evaluate import TaskTrials, run_policy_trials, trial_starts
from envs.protocol import EP_LEN
from envs.tasks import TaskOracle, load_eval_instructions

# (initial symbolic state, chain, position of the task in it): a trial start of envs/experts/evaluate.py
TrialStart = tuple[dict, tuple[str, ...], int]
# CALVIN's articulated-object tasks (drawer, slider, LED button, lightbulb switch)
ARTICULATED = ("open_drawer", "close_drawer", "move_slider_left", "move_slider_right", "turn_on_led", "turn_off_led",
               "turn_on_lightbulb", "turn_off_lightbulb")


def run_task_trials(env: SimEnv, policy: Policy, task: str, *, trials: int, ep_len: int = EP_LEN,
                    oracle: TaskOracle | None = None, instruction: str | None = None,
                    starts: Sequence[TrialStart] | None = None) -> TaskTrials:
    """Run up to `trials` attempts of `task` by `policy` in `env` (a PlayTableEnv; see the module docstring).

    `starts`: `trial_starts(task, 2 * trials)` when already computed (workers get them from the driver).
    """
    return run_policy_trials(env, policy, task, trials, oracle=oracle or TaskOracle(),
                             instruction=instruction or load_eval_instructions()[task], ep_len=ep_len, starts=starts)


def _trials_of_tasks(checkpoint: str, starts: dict[str, list[TrialStart]], trials: int, scene: str, ep_len: int,
                     threads: int) -> list[TaskTrials]:
    """One worker: its own env and policy, the given tasks one after another."""
    import torch

    from components.policy import load_policy
    from envs.playtable import PlayTableEnv

    torch.set_num_threads(threads)
    policy, oracle = load_policy(checkpoint), TaskOracle()
    with PlayTableEnv(scene, cameras=True) as env:
        return [run_task_trials(env, policy, task, trials=trials, ep_len=ep_len, oracle=oracle, starts=task_starts)
                for task, task_starts in starts.items()]


def evaluate_tasks(checkpoint: str | Path, tasks: Sequence[str], *, trials: int, scene: str = "D",
                   ep_len: int = EP_LEN, workers: int = 2) -> dict[str, TaskTrials]:
    """Single-task trials of every task in `tasks` of a checkpoint folder, on `workers` Ray tasks (1 CPU each).

    Ray must be up (`components.ray_runtime.ray_connection`). Returns task -> its trials, in `tasks` order.
    """
    import ray

    if workers < 1:
        raise ValueError(f"workers: at least 1, got {workers}")
    remote = ray.remote(num_cpus=1)(_trials_of_tasks)
    folder = str(Path(checkpoint).resolve())
    # the starts come from CALVIN's chains, generated once here rather than in every worker
    shares = [{task: trial_starts(task, 2 * trials) for task in tasks[i::workers]} for i in range(workers)
              if tasks[i::workers]]
    results = [r for ref in [remote.remote(folder, share, trials, scene, ep_len, 1) for share in shares]
               for r in ray.get(ref)]
    by_task = {r.task: r for r in results}
    return {task: by_task[task] for task in tasks}

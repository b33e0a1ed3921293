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
    results = evaluate_tasks("artifacts/tune/model", ARTICULATED, trials=20, scene="D", workers=2)  # Ray actors
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


class _TrialWorker:
    """A Ray actor: its own env and policy, one task's trials per call."""

    def __init__(self, checkpoint: str, scene: str, ep_len: int, threads: int, action_steps: int | None) -> None:
        import torch

        from components.evaluation.policy import load_policy
        from envs.playtable import PlayTableEnv

        torch.set_num_threads(threads)
        self.policy, self.oracle, self.ep_len = load_policy(checkpoint, action_steps=action_steps), TaskOracle(), ep_len
        self.env = PlayTableEnv(scene, cameras=True)

    def run(self, task: str, trials: int, starts: list[TrialStart]) -> TaskTrials:
        return run_task_trials(self.env, self.policy, task, trials=trials, ep_len=self.ep_len, oracle=self.oracle,
                               starts=starts)


def evaluate_tasks(checkpoint: str | Path, tasks: Sequence[str], *, trials: int, scene: str = "D",
                   ep_len: int = EP_LEN, workers: int = 2, progress: bool = False,
                   action_steps: int | None = None) -> dict[str, TaskTrials]:
    """Single-task trials of every task in `tasks` of a checkpoint folder, on `workers` Ray actors (1 CPU each).

    `action_steps`: control steps executed from each predicted chunk before replanning; None: the whole chunk.

    Ray must be up (`components.core.ray_runtime.ray_connection`). Returns task -> its trials, in `tasks` order;
    `progress` shows a bar over tasks and prints each task's figure as it finishes.
    """
    import ray
    from ray.util import ActorPool
    from tqdm import tqdm

    if workers < 1:
        raise ValueError(f"workers: at least 1, got {workers}")
    actor = ray.remote(num_cpus=1)(_TrialWorker)
    folder = str(Path(checkpoint).resolve())
    pool = ActorPool([actor.remote(folder, scene, ep_len, 1, action_steps) for _ in range(min(workers, len(tasks)))])
    # the starts come from CALVIN's chains, generated once here rather than in every worker
    jobs = [(task, trial_starts(task, 2 * trials)) for task in tasks]
    by_task: dict[str, TaskTrials] = {}
    with tqdm(total=len(tasks), desc="task trials", unit="task", disable=not progress) as bar:
        for r in pool.map_unordered(lambda a, job: a.run.remote(job[0], trials, job[1]), jobs):
            by_task[r.task] = r
            bar.update()
            if progress:
                bar.write(f"{r.task:28s} {r.successes:3d} / {r.trials}  {100 * r.rate:5.1f}%")
    return {task: by_task[task] for task in tasks}

"""Single-task success of a checkpoint in the simulator: each task alone, from evaluation initial states.

    python -m workflows.task_trials                                   # artifacts/tune/model, the 8 articulated tasks
    python -m workflows.task_trials --tasks all --trials 20           # all 34 CALVIN tasks
    python -m workflows.task_trials --checkpoint path/to/model --tasks open_drawer,close_drawer --workers 2
    python -m workflows.task_trials --action-steps 5                  # replan after 5 actions of each chunk

Prints a table and writes metrics/task_trials.json ({task: success rate}, plus the mean, and per task what
the failed trials did instead: the other tasks the oracle finds done by their end, e.g. the LED for the bulb).
The trials are components/evaluation/task_trials.py's: the experts' trial starts (envs/experts/evaluate.py), CALVIN's
evaluation sentence, up to --ep-len steps, the task oracle.
"""

from __future__ import annotations

from components.core.entry import cli_main, prepare_environment, write_metrics

prepare_environment()  # before Ray or transformers is imported

import argparse  # noqa: E402

from components.core.ray_runtime import ray_connection  # noqa: E402
from components.evaluation.task_trials import ARTICULATED, evaluate_tasks  # noqa: E402
from envs.symbolic import TASK_ORDER  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Run the trials and write the per-task success rates."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="artifacts/tune/model", help="a VLAModel folder with policy.json")
    parser.add_argument("--tasks", default="articulated", help="'articulated', 'all', or comma-separated names")
    parser.add_argument("--trials", type=int, default=20, help="trials per task (the paper: 20)")
    parser.add_argument("--scene", default="D", help="PlayTable scene")
    parser.add_argument("--ep-len", type=int, default=360, help="steps per trial (CALVIN: 360)")
    parser.add_argument("--workers", type=int, default=2, help="parallel Ray actors, one env + policy each")
    parser.add_argument("--action-steps", type=int, default=None,
                        help="control steps executed from each predicted chunk before replanning (default: the "
                             "whole chunk, model.chunk_len, as the paper)")
    parser.add_argument("--metrics", default="metrics/task_trials.json")
    args = parser.parse_args(argv)
    if args.action_steps is not None and args.action_steps < 1:
        parser.error(f"--action-steps: at least 1, got {args.action_steps}")
    tasks = {"articulated": ARTICULATED, "all": TASK_ORDER}.get(args.tasks) or tuple(args.tasks.split(","))
    with ray_connection(args.workers):
        results = evaluate_tasks(args.checkpoint, tasks, trials=args.trials, scene=args.scene,
                                 ep_len=args.ep_len, workers=args.workers, progress=True,
                                 action_steps=args.action_steps)
    rates = {task: r.rate for task, r in results.items()}
    for task, r in results.items():
        instead = ", ".join(f"{other} {n}" for other, n in r.instead_counts.items())
        print(f"{task:28s} {r.successes:3d} / {r.trials}  {100 * r.rate:5.1f}%  (failed expert prefixes: {r.skipped})"
              + (f"  failed trials did instead: {instead}" if instead else ""))
    write_metrics({"checkpoint": args.checkpoint, "trials": args.trials, "scene": args.scene,
                   "action_steps": args.action_steps,
                   "mean": sum(rates.values()) / len(rates), "success": rates,
                   "instead": {t: r.instead_counts for t, r in results.items()}}, args.metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

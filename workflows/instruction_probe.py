"""Does a checkpoint's policy read its instruction? Same frames, each task's sentence, action chunks compared.

    python -m workflows.instruction_probe                                   # artifacts/tune/model, articulated tasks
    python -m workflows.instruction_probe --checkpoint path/to/model --starts 4 --out probe.json

Prints a table: row = the task whose trial starts are used, column = the instruction given, entry = the mean
absolute difference of the action chunk from the one under the row's own sentence (components/evaluation/
instruction_probe.py). A near-zero entry between twin tasks that need opposite motions (open / close the drawer,
the light bulb on / off) means the policy does the same thing whatever it is told: one of the twins then fails
every single-task trial (benchmarks/README.md, "Does the policy read the instruction?"). In-process, one env:
the 8 articulated tasks at 2 starts took 3 min on 2 cores (reaching the starts included).
"""

from __future__ import annotations

from components.core.entry import cli_main, prepare_environment, write_metrics

prepare_environment()  # before torch or transformers is imported

import argparse  # noqa: E402

from components.evaluation.instruction_probe import probe_instructions  # noqa: E402
from components.evaluation.policy import load_inference  # noqa: E402
from components.evaluation.task_trials import ARTICULATED  # noqa: E402
from envs.playtable import PlayTableEnv  # noqa: E402
from envs.tasks import load_eval_instructions  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Probe the checkpoint and print (and optionally write) the distance table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="artifacts/tune/model", help="a VLAModel folder with policy.json")
    parser.add_argument("--tasks", default="articulated", help="'articulated' or comma-separated task names")
    parser.add_argument("--starts", type=int, default=2, help="trial starts per task (the first ones task_trials uses)")
    parser.add_argument("--scene", default="D", help="PlayTable scene")
    parser.add_argument("--out", default=None, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    if args.starts < 1:
        parser.error(f"--starts: at least 1, got {args.starts}")
    tasks = ARTICULATED if args.tasks == "articulated" else tuple(args.tasks.split(","))
    unknown = [t for t in tasks if t not in load_eval_instructions()]
    if unknown:  # before the model loads
        parser.error(f"--tasks: no CALVIN evaluation sentence for {unknown}")
    engine = load_inference(args.checkpoint)
    with PlayTableEnv(args.scene, cameras=True) as env:
        probe = probe_instructions(engine, env, tasks, starts=args.starts)
    print(probe.table())
    if args.out:
        write_metrics({"checkpoint": args.checkpoint, "scene": args.scene, **probe.to_dict()}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

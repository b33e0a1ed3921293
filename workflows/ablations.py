"""Table-3 ablations and Table-1 baselines as parallel Ray tasks, sharing the stages they have in common.

    python -m workflows.ablations                                   # all 7 presets on a local Ray
    python -m workflows.ablations --presets full,no_mmu,no_mmu_condition --profile smoke
    ray job submit --working-dir . -- python workflows/ablations.py --root "$PWD" --presets all

`ray job submit` needs a running Ray head, `RAY_API_SERVER_ADDRESS` naming its job server and
`RAY_AUTH_MODE=token` (README.md, Ablations, walks through it).

Collects the raw datasets once (or reads `--raw`, e.g. data/raw, unless ingest.*_dir name them); writes
keyed stage outputs under `<root>/<--out>` (re-runs reuse finished stages), the tables to
`<root>/<--reports>` (table3.md, table1.md, results.json: 95% intervals, the rows they cannot separate from
`full` marked, and where the numbers come from), and MLflow runs to the project's store
(experiment `upvla-ablations`: a parent, one child per variant tagged `preset`). Under `ray job submit` the
job runs in an uploaded copy of the checkout: pass `--root` (a folder every node can reach) so the results
land there, not in Ray's temporary copy; the runs and tables then record the git commit of the `--root`
checkout and whether the copy that ran differs from it. Besides CALVIN's chains, every variant runs
`--task-trials` single-task trials of each `--trial-tasks` task from the same starts (PlayTable). Exits 1 if a
variant failed (the others' tables are written).
"""

from __future__ import annotations

from components.core.entry import cli_main, prepare_environment

prepare_environment()  # before Ray or transformers is imported

import argparse  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from components.core.config import ConfigError, load_config, parse_overrides  # noqa: E402
from components.core.ray_runtime import ray_connection  # noqa: E402
from components.core.tracking import SOURCE_CHECKOUT_VARIABLE, experiment_name, resolve_target  # noqa: E402
from components.evaluation.task_trials import ARTICULATED  # noqa: E402
from components.experiments.ablation_runs import AblationPaths, TrialSpec, run_ablations  # noqa: E402
from components.experiments.ablations import ALL_PRESETS, parse_presets, plan_ablations  # noqa: E402
from envs.tasks import load_eval_instructions  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Run the named presets; print the tables; exit 1 if any variant failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="all", help=f"comma-separated, or `all` ({', '.join(ALL_PRESETS)})")
    parser.add_argument("--params", default="params.yaml", help="base parameter file")
    parser.add_argument("--profile", default=None, help="profile in profiles/ (smoke, ablation, paper) or a YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value for every variant (applied after the preset)")
    parser.add_argument("--root", default=".", help="folder the paths below and the MLflow store are relative to "
                        "(--params is relative to the current folder)")
    parser.add_argument("--raw", default=None, help="folder of raw calvin/, bridge/, llava/ datasets (e.g. data/raw "
                        "after `dvc repro collect`); default: collect them as a shared stage")
    parser.add_argument("--out", default="artifacts/ablations", help="keyed stage outputs")
    parser.add_argument("--reports", default="reports/ablations", help="the markdown tables")
    parser.add_argument("--task-trials", type=int, default=20,
                        help="single-task trials of each --trial-tasks task per variant (same starts; 0: chains only)")
    parser.add_argument("--trial-tasks", default=",".join(ARTICULATED),
                        help="comma-separated tasks of the single-task trials (default: the 8 articulated ones)")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    # under `ray job submit` this code is a copy without .git: the runs' commit is that of --root's checkout
    os.environ.setdefault(SOURCE_CHECKOUT_VARIABLE, str(root))
    overrides = parse_overrides(args.overrides)
    try:
        configs = {name: load_config(args.params, profile=args.profile, preset=name, overrides=overrides)
                   for name in parse_presets(args.presets)}
        plan = plan_ablations(configs)
        trials = trial_spec(args.task_trials, args.trial_tasks)
    except ConfigError:
        raise  # one `config error:` line (cli_main)
    except ValueError as err:  # an unknown preset name, or variants the plan cannot share stages between
        print(f"ablations: {err}", file=sys.stderr)
        return 2
    cfg = plan.variants[0].cfg
    with ray_connection(cfg.cluster.num_cpus):
        summary = run_ablations(plan, args.raw and root / args.raw, AblationPaths(root / args.out),
                                target=resolve_target(cfg.tracking, root),
                                experiment=experiment_name(cfg.tracking, "ablations"), reports_dir=root / args.reports,
                                trials=trials, provenance=request_provenance(args))
    print("\n".join(summary.tables.values()))
    for preset, error in summary.failed.items():
        print(f"variant {preset} failed: {error}", file=sys.stderr)
    print(f"tables in {root / args.reports}; MLflow parent run {summary.parent_run_id}")
    return 1 if summary.failed else 0


def trial_spec(count: int, tasks: str) -> TrialSpec:
    """The --task-trials / --trial-tasks request, checked against the task list."""
    names = tuple(t.strip() for t in tasks.split(",") if t.strip())
    unknown = sorted(set(names) - set(load_eval_instructions()))
    if count < 0 or (count > 0 and not names) or unknown:
        raise ValueError(f"--task-trials {count} --trial-tasks {tasks!r}: need a count >= 0 and known tasks"
                         + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return TrialSpec(names, count)


def request_provenance(args: argparse.Namespace) -> dict[str, str]:
    """What the tables were asked for: the params file (and its sha256), profile, overrides and presets."""
    params = Path(args.params)
    digest = hashlib.sha256(params.read_bytes()).hexdigest()[:12] if params.is_file() else "missing"
    return {"command": "workflows/ablations.py " + " ".join(sys.argv[1:]),
            "params": f"{args.params} (sha256 {digest}), profile {args.profile or 'none'}, "
                      f"overrides {args.overrides or 'none'}"}


if __name__ == "__main__":
    raise SystemExit(main())

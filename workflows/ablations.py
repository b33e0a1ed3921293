"""Table-3 ablations and Table-1 baselines as parallel Ray tasks, sharing the stages they have in common.

    python -m workflows.ablations                                   # all 7 presets on a local Ray
    python -m workflows.ablations --presets full,no_mmu,no_mmu_condition --profile smoke
    ray job submit --working-dir . -- python workflows/ablations.py --root "$PWD" --presets all

`ray job submit` needs a running Ray head, `RAY_API_SERVER_ADDRESS` naming its job server and
`RAY_AUTH_MODE=token` (README.md, Ablations, walks through it).

Collects the raw datasets once (or reads `--raw`, e.g. data/raw, unless ingest.*_dir name them); writes
keyed stage outputs under `<root>/<--out>` (re-runs reuse finished stages), the tables to
`<root>/<--reports>` (table3.md, table1.md, results.json), and MLflow runs to the project's store
(experiment `upvla-ablations`: a parent, one child per variant tagged `preset`). Under `ray job submit` the
job runs in an uploaded copy of the checkout: pass `--root` (a folder every node can reach) so the results
land there, not in Ray's temporary copy. Exits 1 if a variant failed (the others' tables are written).
"""

from __future__ import annotations

from components.core.entry import cli_main, prepare_environment

prepare_environment()  # before Ray or transformers is imported

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from components.core.config import ConfigError, load_config, parse_overrides  # noqa: E402
from components.core.ray_runtime import ray_connection  # noqa: E402
from components.core.tracking import experiment_name, resolve_target  # noqa: E402
from components.experiments.ablation_runs import AblationPaths, run_ablations  # noqa: E402
from components.experiments.ablations import ALL_PRESETS, parse_presets, plan_ablations  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Run the named presets; print the tables; exit 1 if any variant failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="all", help=f"comma-separated, or `all` ({', '.join(ALL_PRESETS)})")
    parser.add_argument("--params", default="params.yaml", help="base parameter file")
    parser.add_argument("--profile", default=None, help="profile in profiles/ (smoke, paper) or a YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value for every variant (applied after the preset)")
    parser.add_argument("--root", default=".", help="folder the paths below and the MLflow store are relative to "
                        "(--params is relative to the current folder)")
    parser.add_argument("--raw", default=None, help="folder of raw calvin/, bridge/, llava/ datasets (e.g. data/raw "
                        "after `dvc repro collect`); default: collect them as a shared stage")
    parser.add_argument("--out", default="artifacts/ablations", help="keyed stage outputs")
    parser.add_argument("--reports", default="reports/ablations", help="the markdown tables")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    overrides = parse_overrides(args.overrides)
    try:
        configs = {name: load_config(args.params, profile=args.profile, preset=name, overrides=overrides)
                   for name in parse_presets(args.presets)}
        plan = plan_ablations(configs)
    except ConfigError:
        raise  # one `config error:` line (cli_main)
    except ValueError as err:  # an unknown preset name, or variants the plan cannot share stages between
        print(f"ablations: {err}", file=sys.stderr)
        return 2
    cfg = plan.variants[0].cfg
    with ray_connection(cfg.cluster.num_cpus):
        summary = run_ablations(plan, args.raw and root / args.raw, AblationPaths(root / args.out),
                                target=resolve_target(cfg.tracking, root),
                                experiment=experiment_name(cfg.tracking, "ablations"), reports_dir=root / args.reports)
    print("\n".join(summary.tables.values()))
    for preset, error in summary.failed.items():
        print(f"variant {preset} failed: {error}", file=sys.stderr)
    print(f"tables in {root / args.reports}; MLflow parent run {summary.parent_run_id}")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

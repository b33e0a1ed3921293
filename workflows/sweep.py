"""Stage-2 hyper-parameter sweep (λ_PRE, λ_MMU, learning rate) with Optuna through Ray Tune; resumable.

    python -m workflows.sweep                                   # params.yaml's sweep: section, local Ray
    python -m workflows.sweep --profile smoke --set sweep.num_trials=3 --set sweep.objective=train_loss
    ray job submit --working-dir . -- python -m workflows.sweep --root "$PWD"   # to a head: README.md, Ablations

Prepares the shared inputs once (collect unless `--raw` names raw datasets, ingest, tokenizer, pretokenize,
and stage 1 when tune.init_from is pretrain; keyed under `<root>/<--out>`, reused by re-runs), then runs
the trials the Optuna study in `sweep.storage` still lacks: re-running the command continues the study.
Logs to the MLflow experiment `upvla-sweep` (a parent run, one child per trial) and prints the best trial.
Exits 1 if a trial failed.
"""

from __future__ import annotations

from components.core.entry import cli_main, prepare_environment

prepare_environment()  # before Ray or transformers is imported

import argparse  # noqa: E402
import json  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

from components.core.config import add_config_args, config_from_args  # noqa: E402
from components.core.ray_runtime import ray_connection  # noqa: E402
from components.core.tracking import experiment_name, resolve_target  # noqa: E402
from components.experiments.ablation_runs import AblationPaths  # noqa: E402
from components.experiments.sweep import prepare_inputs, run_sweep  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Run the study's missing trials and print its best one."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--root", default=".", help="folder --raw, --out, sweep.storage and the MLflow store are "
                        "relative to (--params is relative to the current folder)")
    parser.add_argument("--raw", default=None, help="folder of raw calvin/, bridge/, llava/ datasets; default: collect")
    parser.add_argument("--out", default="artifacts/sweep", help="keyed stage outputs of the sweep")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    root = Path(args.root).resolve()
    paths, target = AblationPaths(root / args.out), resolve_target(cfg.tracking, root)
    experiment = experiment_name(cfg.tracking, "sweep")
    with ray_connection(cfg.cluster.num_cpus):
        inputs = prepare_inputs(cfg, args.raw and root / args.raw, paths, target=target, experiment=experiment)
        summary = run_sweep(cfg, inputs, paths, root=root, target=target, experiment=experiment)
    print(json.dumps(asdict(summary), indent=1))
    return 1 if summary.trials_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

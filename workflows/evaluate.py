"""`evaluate` stage entry point: CALVIN's long-horizon evaluation of a checkpoint on parallel Ray actors.

    python -m workflows.evaluate                              # params.yaml's evaluate.checkpoint (dvc repro)
    python -m workflows.evaluate --checkpoint path/to/model   # any checkpoint folder
    python -m workflows.evaluate --run-id <mlflow run id>     # or --checkpoint runs:/<id>/<path>
    python -m workflows.evaluate --set evaluate.num_sequences=1000 --set evaluate.num_workers=8

Writes artifacts/eval/ (results.json, the resumable results log, the bar chart, videos) and
metrics/eval.json, and logs an MLflow run `evaluate-<preset>-s<seed>`. A re-run resumes.
"""

from __future__ import annotations

from components.core.entry import cli_main, prepare_environment, write_metrics

prepare_environment()  # before Ray or transformers is imported

import argparse  # noqa: E402

from components.core.config import add_config_args, config_from_args, flatten, to_dict  # noqa: E402
from components.core.ray_runtime import ray_connection  # noqa: E402
from components.core.tracking import experiment_name, resolve_target, run_name, start_run  # noqa: E402
from components.evaluation.evaluate import evaluate_checkpoint  # noqa: E402
from envs.protocol import format_summary  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Evaluate the checkpoint named by the flags (default: params.yaml's evaluate.checkpoint)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="checkpoint folder or runs:/<run id>/<path>")
    source.add_argument("--run-id", help="MLflow run whose artifacts hold one checkpoint folder")
    parser.add_argument("--out", default="artifacts/eval", help="output folder (holds the resumable log)")
    parser.add_argument("--metrics", default="metrics/eval.json", help="DVC metrics file")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    checkpoint = args.run_id or args.checkpoint or cfg.evaluate.checkpoint
    target = resolve_target(cfg.tracking)
    name = run_name("evaluate", cfg.experiment.preset, cfg.experiment.seed)
    params = flatten(to_dict(cfg.evaluate), "evaluate.") | flatten(to_dict(cfg.env), "env.")
    with ray_connection(cfg.cluster.num_cpus), start_run(target, experiment_name(cfg.tracking, "pipeline"), name,
                                                         tags={"checkpoint": checkpoint}, params=params) as run:
        summary = evaluate_checkpoint(cfg.evaluate, cfg.env, checkpoint, args.out, target=target,
                                      use_gpu=cfg.cluster.use_gpu, log=run)
    write_metrics(summary.metrics(), args.metrics)
    print(format_summary(summary.calvin))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

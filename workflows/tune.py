"""`tune` stage entry point: stage 2 (prediction with action, MMU co-training, L' prompt) on Ray Train.

    python -m workflows.tune                                       # the DVC stage: from artifacts/pretrain/model
    python -m workflows.tune --preset no_bridge_pretrain           # from the initial backbone instead
    python -m workflows.tune --init path/to/model --set tune.steps=500

Reads data/tokens, data/ingested and stage 1's artifacts/pretrain/model (or, with tune.init_from:
backbone, artifacts/vq and artifacts/text_tokenizer); writes artifacts/tune/model (VLAModel.save_pretrained
+ policy.json, what the evaluate stage loads) and metrics/tune.json; checkpoints go to ray_results/tune.
Logs the MLflow run `tune-<preset>-s<seed>`.
"""

from __future__ import annotations

from components.core.entry import cli_main, prepare_environment, write_metrics

prepare_environment()  # before Ray or transformers is imported

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

from components.core.config import add_config_args, config_from_args  # noqa: E402
from components.core.ray_runtime import ray_connection  # noqa: E402
from components.core.tracking import experiment_name, resolve_target, run_name, start_run  # noqa: E402
from components.training.train import add_input_args, stage_datasets, stage_inputs, stage_params, tune  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Train stage 2 and write its model folder (with policy.json) and metrics."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    add_input_args(parser, stage="tune")
    parser.add_argument("--init", default="artifacts/pretrain/model", help="stage 1's model folder")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    inputs = stage_inputs(args, init_model=args.init if cfg.tune.init_from == "pretrain" else None)
    name = run_name("tune", cfg.experiment.preset, cfg.experiment.seed)
    tracking = start_run(resolve_target(cfg.tracking), experiment_name(cfg.tracking, "pipeline"), name,
                         params=stage_params(cfg, "tune"), inputs=stage_datasets(inputs))
    with tracking as run, ray_connection(cfg.cluster.num_cpus, log_to_driver=True):  # workers' progress bar shown
        summary = tune(cfg, inputs, Path(args.out), storage=Path(args.storage), log=run)
    write_metrics(summary.metrics(), args.metrics, echo=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

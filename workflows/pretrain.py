"""`pretrain` stage entry point: stage 1 (future prediction + understanding co-training) on Ray Train.

    python -m workflows.pretrain                                   # the DVC stage (params.yaml)
    python -m workflows.pretrain --preset no_mmu --set pretrain.steps=200
    python -m workflows.pretrain --profile paper                   # on a GPU cluster (RAY_ADDRESS)

Reads data/tokens, data/ingested, artifacts/vq and artifacts/text_tokenizer; writes
artifacts/pretrain/model (VLAModel.save_pretrained) and metrics/pretrain.json; full-state checkpoints go
to ray_results/pretrain (an interrupted run resumes when re-run). Logs the MLflow run
`pretrain-<preset>-s<seed>`: parameters, per-step losses, lr, throughput, future-frame grids, the model.
"""

from __future__ import annotations

from components.core.entry import cli_main, prepare_environment, write_metrics

prepare_environment()  # before Ray or transformers is imported

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

from components.core.config import add_config_args, config_from_args  # noqa: E402
from components.core.ray_runtime import ray_connection  # noqa: E402
from components.core.tracking import experiment_name, resolve_target, run_name, start_run  # noqa: E402
from components.training.train import add_input_args, pretrain, stage_datasets, stage_inputs, stage_params  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Train stage 1 and write its model folder and metrics."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    add_input_args(parser, stage="pretrain")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    inputs = stage_inputs(args, init_model=None)
    name = run_name("pretrain", cfg.experiment.preset, cfg.experiment.seed)
    tracking = start_run(resolve_target(cfg.tracking), experiment_name(cfg.tracking, "pipeline"), name,
                         params=stage_params(cfg, "pretrain"), inputs=stage_datasets(inputs))
    with tracking as run, ray_connection(cfg.cluster.num_cpus, log_to_driver=True):  # workers' progress bar shown
        summary = pretrain(cfg, inputs, Path(args.out), storage=Path(args.storage), log=run)
    write_metrics(summary.metrics(), args.metrics, echo=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`pretokenize` stage entry point: VQ pre-tokenization of every ingested frame with Ray Data -> data/tokens/.

    python -m workflows.pretokenize                     # resumes: finished shards are kept
    python -m workflows.pretokenize --set pretokenize.num_workers=8 --set pretokenize.cpus_per_worker=4

Writes data/tokens/frames/shard-*.parquet + manifest.json and metrics/pretokenize.json, and logs an
MLflow run `pretokenize-<preset>-s<seed>`.
"""

from __future__ import annotations

from components.core.entry import cli_main, prepare_environment, write_metrics

prepare_environment()  # before Ray or transformers is imported

import argparse  # noqa: E402
import json  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

from components.core.config import add_config_args, config_from_args, flatten, to_dict  # noqa: E402
from components.core.ray_runtime import ray_connection  # noqa: E402
from components.core.tracking import experiment_name, folder_dataset, resolve_target, run_name, start_run  # noqa: E402
from components.data.pretokenize import pretokenize_frames  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Encode every pending shard."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--vq", default="artifacts/vq", help="the tokenizer stage's VQ folder")
    parser.add_argument("--ingested", default="data/ingested", help="the ingest stage's output")
    parser.add_argument("--out", default="data/tokens", help="output folder")
    parser.add_argument("--metrics", default="metrics/pretokenize.json", help="DVC metrics file")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    name = run_name("pretokenize", cfg.experiment.preset, cfg.experiment.seed)
    params = flatten(to_dict(cfg.pretokenize), "pretokenize.")
    with start_run(resolve_target(cfg.tracking), experiment_name(cfg.tracking, "pipeline"), name,
                   params=params, inputs=[folder_dataset(args.ingested, "encoding"), folder_dataset(args.vq, "encoder")]
                   ) as run, ray_connection(cfg.cluster.num_cpus):
        summary = pretokenize_frames(cfg.pretokenize, cfg.model, Path(args.vq), Path(args.ingested), Path(args.out),
                                     log=run)
    write_metrics(asdict(summary), args.metrics)
    print(json.dumps(asdict(summary), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

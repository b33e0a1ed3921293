"""`tokenize` stage entry point: VQ pre-tokenization of every ingested frame with Ray Data -> data/tokens/.

    python -m workflows.tokenize                     # resumes: finished shards are kept
    python -m workflows.tokenize --set tokenize.num_workers=8 --set tokenize.cpus_per_worker=4

Writes data/tokens/frames/shard-*.parquet + manifest.json and metrics/tokenize.json, and logs an
MLflow run `tokenize-<preset>-s<seed>`.
"""

from __future__ import annotations

import os

# before ray is imported: a local Ray bound to 127.0.0.1 (stack-notes §2)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import argparse  # noqa: E402
import json  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

from components.config import add_config_args, config_from_args, flatten, to_dict  # noqa: E402
from components.pretokenize import pretokenize_frames  # noqa: E402
from components.ray_runtime import ray_connection  # noqa: E402
from components.tracking import experiment_name, resolve_target, run_name, start_run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Encode every pending shard."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--vq", default="artifacts/vq", help="the tokenizer stage's VQ folder")
    parser.add_argument("--ingested", default="data/ingested", help="the ingest stage's output")
    parser.add_argument("--out", default="data/tokens", help="output folder")
    parser.add_argument("--metrics", default="metrics/tokenize.json", help="DVC metrics file")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    name = run_name("tokenize", cfg.experiment.preset, cfg.experiment.seed)
    with start_run(resolve_target(cfg.tracking), experiment_name(cfg.tracking, "pipeline"), name,
                   params=flatten(to_dict(cfg.tokenize), "tokenize.")) as run, ray_connection(cfg.cluster.num_cpus):
        summary = pretokenize_frames(cfg.tokenize, cfg.model, Path(args.vq), Path(args.ingested), Path(args.out),
                                     log=run)
    Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(args.metrics).write_text(json.dumps(asdict(summary), indent=2))
    print(json.dumps(asdict(summary), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

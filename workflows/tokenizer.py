"""`tokenizer` stage entry point: the VQ image tokenizer and the text tokenizer -> artifacts/{vq,text_tokenizer}/.

    python -m workflows.tokenizer                                # fit on data/ingested (embedded default)
    python -m workflows.tokenizer --profile paper                # load tokenizer.pretrained / text_pretrained

Writes metrics/tokenizer.json and logs an MLflow run `tokenizer-<preset>-s<seed>` (losses, held-out
PSNR, a grid of originals vs reconstructions).
"""

from __future__ import annotations

from components.core.entry import cli_main, prepare_environment, write_metrics

prepare_environment()  # before Ray or transformers is imported

import argparse  # noqa: E402
import json  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

from components.core.config import add_config_args, config_from_args, flatten, to_dict  # noqa: E402
from components.core.tracking import experiment_name, folder_dataset, resolve_target, run_name, start_run  # noqa: E402
from components.data.tokenizer import prepare_tokenizers  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Fit or load the tokenizers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--ingested", default="data/ingested", help="the ingest stage's output")
    parser.add_argument("--out", default="artifacts", help="writes <out>/vq and <out>/text_tokenizer")
    parser.add_argument("--metrics", default="metrics/tokenizer.json", help="DVC metrics file")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    name = run_name("tokenizer", cfg.experiment.preset, cfg.experiment.seed)
    params = flatten(to_dict(cfg.tokenizer), "tokenizer.") | flatten(to_dict(cfg.model.vq), "model.vq.")
    with start_run(resolve_target(cfg.tracking), experiment_name(cfg.tracking, "pipeline"), name,
                   params=params, inputs=[folder_dataset(args.ingested, "training")]) as run:
        summary = prepare_tokenizers(cfg.tokenizer, cfg.model, Path(args.ingested), Path(args.out),
                                     seed=cfg.experiment.seed, log=run)
    write_metrics(asdict(summary), args.metrics)
    print(json.dumps(asdict(summary), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

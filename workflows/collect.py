"""`collect` stage entry point: scripted-expert data in CALVIN, BridgeData v2 and LLaVA formats -> data/raw/.

    python -m workflows.collect                                   # the embedded default (params.yaml)
    python -m workflows.collect --set collect.episodes_per_scene=2 --out /tmp/raw --metrics /tmp/raw/collect.json

Writes data/raw/{calvin,bridge,llava}/ and metrics/collect.json (a side run: point --metrics elsewhere too,
or it overwrites the pipeline's), and logs an MLflow run
`collect-<preset>-s<seed>` (counts, labelled windows per task, a grid of sample frames per scene).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from components.collection.collect import collect_datasets
from components.core.config import add_config_args, config_from_args, flatten, to_dict
from components.core.entry import cli_main, write_metrics
from components.core.tracking import experiment_name, resolve_target, run_name, start_run


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Collect the three raw datasets."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--out", default="data/raw", help="writes <out>/calvin, <out>/bridge, <out>/llava")
    parser.add_argument("--metrics", default="metrics/collect.json", help="DVC metrics file")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    name = run_name("collect", cfg.experiment.preset, cfg.collect.seed)
    with start_run(resolve_target(cfg.tracking), experiment_name(cfg.tracking, "pipeline"), name,
                   params=flatten(to_dict(cfg.collect), "collect.")) as run:
        summary = collect_datasets(cfg.collect, Path(args.out), log=run)
    write_metrics(summary.metrics(), args.metrics)
    print(json.dumps(asdict(summary), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

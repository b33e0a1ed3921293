"""`ingest` stage entry point: raw CALVIN / Bridge / LLaVA folders -> data/ingested/ (Parquet + quarantine report).

    python -m workflows.ingest                                   # the folders `collect` wrote (data/raw/...)
    python -m workflows.ingest --set ingest.calvin_dir=/datasets/task_ABC_D

Writes data/ingested/{frames,windows,vqa}/, quarantine.json/.txt and metrics/ingest.json, and logs an
MLflow run `ingest-<preset>-s<seed>` (counts, and the quarantine report as artifacts). The output is
swapped in whole only when the run succeeds; a failed run's report goes to data/ingested.failed/.
"""

from __future__ import annotations

from components.core.entry import cli_main, prepare_environment, write_metrics

prepare_environment()  # before Ray or transformers is imported

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

from components.core.config import add_config_args, config_from_args, flatten, to_dict  # noqa: E402
from components.core.ray_runtime import ray_connection  # noqa: E402
from components.core.tracking import experiment_name, folder_dataset, resolve_target, run_name, start_run  # noqa: E402
from components.data.ingest import ingest_datasets, resolve_sources, summary_dict  # noqa: E402
from envs.describe import describe_scene  # noqa: E402


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Ingest the configured dataset folders."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--raw", default="data/raw", help="where `collect` writes (used for null ingest.*_dir)")
    parser.add_argument("--out", default="data/ingested", help="output folder")
    parser.add_argument("--metrics", default="metrics/ingest.json", help="DVC metrics file")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    sources = resolve_sources(cfg.ingest, Path(args.raw))
    name = run_name("ingest", cfg.experiment.preset, cfg.experiment.seed)
    inputs = [folder_dataset(path, "ingest", name=source) for source, path in sources.items() if path is not None]
    with start_run(resolve_target(cfg.tracking), experiment_name(cfg.tracking, "pipeline"), name,
                   params=flatten(to_dict(cfg.ingest), "ingest."), inputs=inputs) as run, \
            ray_connection(cfg.cluster.num_cpus):
        # every CALVIN frame (real or collected) gets its ground-truth description from its state
        summary = ingest_datasets(cfg.ingest, sources, Path(args.out), describe=describe_scene, log=run)
    write_metrics(summary.metrics(), args.metrics)
    print(json.dumps(summary_dict(summary), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

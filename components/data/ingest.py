"""`ingest` stage: raw CALVIN / BridgeData v2 / LLaVA folders -> validated Parquet tables + quarantine report.

The same readers serve the real datasets and the ones `collect` writes (components/data/sources/). Each
dataset is cut into read units of about `ingest.rows_per_file` records that run as Ray tasks and
write their own part files; the driver then checks CALVIN's language windows against the frames that
were kept, writes the windows table and the quarantine report, and fails when a table lost more than
`ingest.max_bad_fraction` of its records. Output layout and schemas: components/data/tables.py.

    summary = ingest_datasets(cfg.ingest, {"calvin": calvin_dir, "bridge": None, "llava": llava_dir},
                              Path("data/ingested"), describe=describe_scene)
    python -m workflows.ingest                       # the DVC stage
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import ray
from tqdm import tqdm

from components.core.config import IngestConfig
from components.core.ray_runtime import require_ray
from components.core.tracking import NULL_LOGGER, MetricLogger
from components.data.quarantine import IngestError, QuarantineRecord, check_bad_fraction, write_report
from components.data.sources import UnitResult
from components.data.sources.bridge import plan_bridge
from components.data.sources.calvin import Describe, plan_calvin, read_windows
from components.data.sources.llava import plan_llava
from components.data.tables import FRAMES, VQA, WINDOWS, WINDOWS_SCHEMA, PartWriter, read_table

SOURCES = ("calvin", "bridge", "llava")


@dataclass(frozen=True)
class IngestSummary:
    """Counts of one ingest run (also `metrics/ingest.json`)."""

    frames: int
    windows: int
    vqa: int
    # records seen / quarantined per table
    totals: dict[str, int]
    quarantined: dict[str, int]
    # records skipped on purpose, by reason (llava_without_image, bridge_without_lang)
    skipped: dict[str, int]
    # CALVIN frames that got a ground-truth scene description
    described_frames: int
    report: str

    def metrics(self) -> dict[str, float]:
        """Flat numeric metrics for MLflow and DVC."""
        out = {"frames": self.frames, "windows": self.windows, "vqa": self.vqa,
               "described_frames": self.described_frames} | {f"skipped_{k}": v for k, v in self.skipped.items()}
        for table, total in self.totals.items():
            out[f"quarantined_{table}"] = self.quarantined.get(table, 0)
            out[f"bad_fraction_{table}"] = self.quarantined.get(table, 0) / total if total else 0.0
        return {k: float(v) for k, v in out.items()}


def resolve_sources(cfg: IngestConfig, raw_dir: Path) -> dict[str, Path]:
    """The three dataset folders: the configured ones, or `collect`'s output under `raw_dir` when null."""
    found = {}
    for name in SOURCES:
        configured = getattr(cfg, f"{name}_dir")
        path = Path(configured) if configured else raw_dir / name
        if not path.is_dir():
            raise IngestError(f"ingest.{name}_dir: {path} is not a folder"
                              + ("" if configured else " (null means the `collect` stage's output)"))
        found[name] = path
    return found


def _read_unit(unit: Any, out_dir: str, rows_per_file: int, describe: Describe | None) -> UnitResult:
    return unit.read(Path(out_dir), rows_per_file, describe)


def run_units(units: Sequence[Any], out_dir: Path, rows_per_file: int, describe: Describe | None) -> list[UnitResult]:
    """Read every unit as a Ray task (one CPU each); results in unit order, with a progress bar."""
    task = ray.remote(num_cpus=1)(_read_unit)
    refs = [task.remote(u, str(out_dir), rows_per_file, describe) for u in units]
    pending = list(refs)
    with tqdm(total=len(refs), desc="ingest units", unit="unit") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            bar.update(len(done))
    return ray.get(refs)


def ingest_datasets(cfg: IngestConfig, sources: Mapping[str, Path | None], out_dir: Path, *,
                    describe: Describe | None = None, log: MetricLogger = NULL_LOGGER) -> IngestSummary:
    """Ingest the given dataset folders into `out_dir` (frames/, windows/, vqa/, quarantine.json/.txt).

    Args:
        cfg: the `ingest:` section (rows_per_file, max_bad_fraction).
        sources: folder per source name ("calvin", "bridge", "llava"); None = not ingested.
        out_dir: output folder; its tables are replaced.
        describe: scene_obs -> ground-truth description for CALVIN frames (envs' description function).
        log: where metrics and the quarantine report go.

    Raises:
        IngestError: an unusable dataset folder, or too many quarantined records (after the report is written).
    """
    require_ray("ingest")
    for table in (FRAMES, WINDOWS, VQA):
        shutil.rmtree(out_dir / table, ignore_errors=True)
    units, episodes = _plan(sources, cfg.rows_per_file)
    results = run_units(units, out_dir, cfg.rows_per_file, describe)
    calvin = sources.get("calvin")
    if calvin is not None:
        kept = {split: set() for split in episodes}
        for r in results:
            for split, frame_id in r.kept_frames:
                kept[split].add(frame_id)
        results += [read_windows(Path(calvin), split, eps, kept[split]) for split, eps in episodes.items()]
    return _finish(cfg, results, out_dir, log)


def _plan(sources: Mapping[str, Path | None], per_unit: int) -> tuple[list[Any], dict]:
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"ingest: unknown sources {sorted(unknown)}; expected {SOURCES}")
    units, episodes = [], {}
    if sources.get("calvin") is not None:
        calvin_units, episodes = plan_calvin(Path(sources["calvin"]), per_unit)
        units += calvin_units
    if sources.get("bridge") is not None:
        units += plan_bridge(Path(sources["bridge"]), per_unit)
    if sources.get("llava") is not None:
        units += plan_llava(Path(sources["llava"]), per_unit)
    return units, episodes


def _finish(cfg: IngestConfig, results: list[UnitResult], out_dir: Path, log: MetricLogger) -> IngestSummary:
    totals = _sum_counts(r.totals for r in results)
    records: list[QuarantineRecord] = [rec for r in results for rec in r.records]
    windows = PartWriter(out_dir / WINDOWS, "part", WINDOWS_SCHEMA, cfg.rows_per_file)
    for row in (row for r in results for row in r.windows):
        windows.add(row)
    windows.flush()
    report = write_report(records, totals, out_dir)
    log.log_artifact(report, "ingest")
    log.log_artifact(out_dir / "quarantine.txt", "ingest")
    bad = {t: sum(1 for rec in records if rec.table == t) for t in totals}
    summary = IngestSummary(frames=totals.get(FRAMES, 0) - bad.get(FRAMES, 0), windows=windows.rows_written,
                            vqa=totals.get(VQA, 0) - bad.get(VQA, 0), totals=totals, quarantined=bad,
                            skipped=_sum_counts(r.skipped for r in results),
                            described_frames=_described(out_dir), report=str(report))
    log.log_metrics({f"ingest/{k}": v for k, v in summary.metrics().items()})
    check_bad_fraction(records, totals, cfg.max_bad_fraction, report)
    return summary


def _sum_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for key, n in c.items():
            total[key] = total.get(key, 0) + n
    return total


def _described(out_dir: Path) -> int:
    if not any((out_dir / FRAMES).glob("*.parquet")):
        return 0
    column = read_table(out_dir / FRAMES, columns=["description"]).column("description")
    return int(pc.sum(pc.is_valid(column)).as_py() or 0)


def summary_dict(summary: IngestSummary) -> dict[str, Any]:
    """The summary as a JSON-ready dict."""
    return asdict(summary)

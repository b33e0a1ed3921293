"""`ingest` stage: raw CALVIN / BridgeData v2 / LLaVA folders -> validated Parquet tables + quarantine report.

The same readers serve the real datasets and the ones `collect` writes (components/data/sources/). Each
dataset is cut into read units of about `ingest.rows_per_file` records that run as Ray tasks and
write their own part files; the driver then checks CALVIN's language windows against the frames that
were kept, writes the windows table and the quarantine report, and fails when a table lost more than
`ingest.max_bad_fraction` of its records. Output layout and schemas: components/data/tables.py.

Every index file is read (and an empty dataset refused) before anything is written. The run writes into
a staging folder next to `out_dir` (`.<name>.staging-*`, the same file system) and swaps it in by
renames only when it succeeded, so a failed run leaves the previous output as it was; the quarantine
report of a run that failed the bad-fraction limit is kept in `<out_dir>.failed/`.

    summary = ingest_datasets(cfg.ingest, {"calvin": calvin_dir, "bridge": None, "llava": llava_dir},
                              Path("data/ingested"), describe=describe_scene)
    python -m workflows.ingest                       # the DVC stage
"""

from __future__ import annotations

import os
import secrets
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import ray
from tqdm import tqdm

from components.core.config import INGEST_SOURCES, IngestConfig
from components.core.ray_runtime import require_ray
from components.core.tracking import NULL_LOGGER, MetricLogger
from components.data.quarantine import IngestError, QuarantineRecord, bad_counts, check_bad_fraction, write_report
from components.data.sources import UnitResult
from components.data.sources.bridge import plan_bridge
from components.data.sources.calvin import Describe, LanguageIndex, plan_calvin
from components.data.sources.llava import plan_llava
from components.data.tables import FRAMES, VQA, WINDOWS, WINDOWS_SCHEMA, PartWriter, read_table

SOURCES = INGEST_SOURCES


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


def resolve_sources(cfg: IngestConfig, raw_dir: Path) -> dict[str, Path | None]:
    """The folders of `ingest.sources` (configured, or `collect`'s under `raw_dir` when null); None if left out."""
    found: dict[str, Path | None] = {}
    for name in SOURCES:
        if name not in cfg.sources:
            found[name] = None
            continue
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
    """Read every unit as a Ray task (one CPU each) writing under `out_dir`; results in unit order, with a progress bar.

    On an interrupt the tasks still running are cancelled, so none writes into `out_dir` after this returns.
    """
    task = ray.remote(num_cpus=1)(_read_unit)
    refs = [task.remote(u, str(out_dir), rows_per_file, describe) for u in units]
    pending = list(refs)
    try:
        with tqdm(total=len(refs), desc="ingest units", unit="unit") as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                bar.update(len(done))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        ray.wait(pending, num_returns=len(pending), timeout=30)
        raise
    return ray.get(refs)


def ingest_datasets(cfg: IngestConfig, sources: Mapping[str, Path | None], out_dir: Path, *,
                    describe: Describe | None = None, log: MetricLogger = NULL_LOGGER) -> IngestSummary:
    """Ingest the given dataset folders into `out_dir` (frames/, windows/, vqa/, quarantine.json/.txt).

    Args:
        cfg: the `ingest:` section (rows_per_file, max_bad_fraction).
        sources: folder per source name ("calvin", "bridge", "llava"); None = not ingested.
        out_dir: output folder; replaced as a whole when the run succeeds, left as it was when it fails.
        describe: scene_obs -> ground-truth description for CALVIN frames (envs' description function).
        log: where metrics and the quarantine report go.

    Raises:
        IngestError: an unusable or empty dataset folder, or too many quarantined records (this run's report
            is then in `<out_dir>.failed/`).
    """
    require_ray("ingest")
    if out_dir.exists() and not out_dir.is_dir():
        raise IngestError(f"{out_dir}: the ingest output exists and is not a folder")
    units, languages = _plan(sources, cfg.rows_per_file)
    target = out_dir.resolve()  # a symlinked output folder: stage next to its target and replace that
    staging = _new_sibling(target, "staging")
    try:
        results = run_units(units, staging, cfg.rows_per_file, describe)
        results += _check_windows(languages, results)
        summary = _finish(cfg, results, staging, out_dir, log)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    failed = target.with_name(f"{target.name}.failed")
    try:
        check_bad_fraction(summary.quarantined, summary.totals, cfg.max_bad_fraction, failed / "quarantine.txt")
    except IngestError as err:
        _set_aside_report(staging, failed)
        raise IngestError(f"{err}; {out_dir} is left as it was") from err
    publish(staging, target)
    shutil.rmtree(failed, ignore_errors=True)  # a report of an earlier failed run no longer applies
    return summary


def _plan(sources: Mapping[str, Path | None], per_unit: int) -> tuple[list[Any], list[LanguageIndex]]:
    """Every source's read units and CALVIN's language windows; all index files are read here."""
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"ingest: unknown sources {sorted(unknown)}; expected {SOURCES}")
    units, languages = [], []
    if sources.get("calvin") is not None:
        calvin_units, languages = plan_calvin(Path(sources["calvin"]), per_unit)
        units += calvin_units
    if sources.get("bridge") is not None:
        units += plan_bridge(Path(sources["bridge"]), per_unit)
    if sources.get("llava") is not None:
        units += plan_llava(Path(sources["llava"]), per_unit)
    return units, languages


def _check_windows(languages: Sequence[LanguageIndex], results: Sequence[UnitResult]) -> list[UnitResult]:
    """CALVIN's language windows of each split, checked against the frames the units kept."""
    kept: dict[str, set[int]] = {index.split: set() for index in languages}
    for r in results:
        for split, frame_id in r.kept_frames:
            kept[split].add(frame_id)
    return [index.check(kept[index.split]) for index in languages]


def _finish(cfg: IngestConfig, results: list[UnitResult], staging: Path, out_dir: Path,
            log: MetricLogger) -> IngestSummary:
    """Write the windows table and the report into `staging`; the summary names the files as under `out_dir`."""
    totals = _sum_counts(r.totals for r in results)
    records: list[QuarantineRecord] = [rec for r in results for rec in r.records]
    windows = PartWriter(staging / WINDOWS, "part", WINDOWS_SCHEMA, cfg.rows_per_file)
    for row in (row for r in results for row in r.windows):
        windows.add(row)
    windows.flush()
    report = write_report(records, totals, staging)
    log.log_artifact(report, "ingest")
    log.log_artifact(staging / "quarantine.txt", "ingest")
    bad = {t: bad_counts(records).get(t, 0) for t in totals}
    summary = IngestSummary(frames=totals.get(FRAMES, 0) - bad.get(FRAMES, 0), windows=windows.rows_written,
                            vqa=totals.get(VQA, 0) - bad.get(VQA, 0), totals=totals, quarantined=bad,
                            skipped=_sum_counts(r.skipped for r in results),
                            described_frames=_described(staging), report=str(out_dir / report.name))
    log.log_metrics({f"ingest/{k}": v for k, v in summary.metrics().items()})
    return summary


def _new_sibling(target: Path, role: str) -> Path:
    """A new, empty folder `.<name>.<role>-<random>` next to `target` (the same file system: renames are atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = _sibling(target, role)
    path.mkdir()  # the umask's mode, as the output folder had
    return path


def _sibling(target: Path, role: str) -> Path:
    return target.with_name(f".{target.name}.{role}-{os.getpid()}-{secrets.token_hex(4)}")


def publish(staging: Path, target: Path) -> None:
    """Put the finished folder `staging` in place of `target` by renames (old -> backup, new -> target).

    Between the two renames `target` is briefly absent, never partial; a failure of the second rename puts
    the old folder back.
    """
    if not target.exists() and not target.is_symlink():
        staging.rename(target)
        return
    backup = _sibling(target, "old")
    target.rename(backup)
    try:
        staging.rename(target)
    except BaseException:
        backup.rename(target)
        raise
    try:
        shutil.rmtree(backup)
    except OSError as err:  # the new output is in place; a leftover copy of the old one is not a failed run
        warnings.warn(f"ingest: could not delete the previous output, moved to {backup}: {err}", stacklevel=2)


def _set_aside_report(staging: Path, failed: Path) -> None:
    """Move this run's quarantine report to `failed` (replacing an older one) and drop the staged tables."""
    shutil.rmtree(failed, ignore_errors=True)
    failed.mkdir()
    for name in ("quarantine.json", "quarantine.txt"):
        (staging / name).rename(failed / name)
    shutil.rmtree(staging, ignore_errors=True)


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

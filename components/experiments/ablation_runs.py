"""Running an ablation plan on Ray: shared stages once, the variants as parallel tasks, one MLflow run each.

    summary = run_ablations(plan, raw_dir, AblationPaths(Path("artifacts/ablations")), target=t,
                            experiment="upvla-ablations", reports_dir=Path("reports/ablations"))

On the Ray this process is connected to (components.core.ray_runtime.ray_connection: `RAY_ADDRESS` or a local
one). The data stages (collect unless raw datasets are given, ingest, tokenizer, pretokenize) run first,
here, once (they fan out over Ray or processes themselves). Then one task per stage-1
group trains the shared model and one task per variant trains stage 2 from it (Ray starts a variant's
task when its stage-1 model exists) and evaluates it. These tasks reserve no CPU: they only drive the
stages' Ray Train workers and rollout actors, which reserve what the config says.

Outputs are keyed by components.experiments.ablations' stage keys under `paths.root` (`data-<key>/`,
`pretrain-<key>/`, `tune-<key>/`, `evaluate-<preset>-<key>/`, Ray Train storage in `ray_results/`), so a
re-run reuses every finished stage and resumes an interrupted evaluation. On a multi-node cluster
`paths.root` must be a shared file system (and the tracking target a shared store or server).

MLflow (experiment `<prefix>-ablations`): a parent run `ablations-s<seed>`; children for the shared
stages (`ingest-shared-s0`, `pretrain-full+no_mmu_condition-s0`, ...) tagged `upvla.role=stage`, and one
child per variant, `ablation-<preset>-s<seed>`, tagged `preset` and `upvla.role=variant`, holding its
stage-2 losses, evaluation metrics (avg_seq_len, chain_sr_1..5, task_sr/*) and artifacts. The tables go
to `reports_dir` and to the parent run.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray

from components.collection.collect import collect_datasets
from components.core.config import ProjectConfig, flatten, to_dict
from components.core.tracking import (
    MetricLogger,
    MlflowRun,
    TrackingTarget,
    create_run,
    end_run,
    run_name,
    source_tags,
    start_run,
)
from components.data.ingest import ingest_datasets, resolve_sources
from components.data.pretokenize import pretokenize_frames
from components.data.tokenizer import prepare_tokenizers
from components.evaluation.evaluate import evaluate_checkpoint
from components.evaluation.task_trials import ARTICULATED, evaluate_tasks
from components.experiments.ablations import AblationPlan, Variant, ablation_tables
from components.training.inputs import StageInputs
from components.training.train import train_stage, training_datasets
from envs.describe import describe_scene

DONE = "done.json"  # written last in a stage folder: the stage finished and its outputs are complete
TRIALS_FILE = "task_trials.json"  # a variant's single-task trials, beside its evaluation
# config sections a variant's run records as parameters (the MLflow compare view shows their differences)
PARAM_SECTIONS = ("experiment", "model", "pretrain", "tune", "evaluate", "env")


@dataclass(frozen=True)
class AblationPaths:
    """Where the keyed stage outputs go."""

    root: Path

    def stage(self, stage: str, key: str) -> Path:
        """Folder of one keyed stage output, e.g. `pretrain-<key>`."""
        return self.root / f"{stage}-{key}"

    @property
    def storage(self) -> Path:
        """Ray Train storage of every training run of the ablation."""
        return self.root / "ray_results"


@dataclass(frozen=True)
class AblationSummary:
    """The finished comparison: metrics per variant, errors of the failed ones, the tables written."""

    parent_run_id: str
    # preset -> the evaluate stage's metrics (metrics/eval.json layout)
    results: dict[str, dict[str, Any]]
    # preset -> the error that stopped it
    failed: dict[str, str] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)


def done(folder: Path) -> dict[str, Any] | None:
    """The record a finished stage left in `folder`, or None."""
    marker = folder / DONE
    return json.loads(marker.read_text()) if marker.is_file() else None


def mark_done(folder: Path, record: dict[str, Any]) -> None:
    """Record that the stage in `folder` finished (written last)."""
    (folder / DONE).write_text(json.dumps(record, indent=2))


def prepare_data(cfg: ProjectConfig, raw_dir: Path | None, folder: Path,
                 runs: Callable[[str], AbstractContextManager[MetricLogger]]) -> StageInputs:
    """Run collect (unless `raw_dir` names the raw datasets), ingest, tokenizer and pretokenize into `folder`.

    Skipped when done there before; returns the training inputs. `runs(stage)` opens the MLflow run a
    data stage logs into.
    """
    ingested, artifacts, tokens = folder / "ingested", folder / "artifacts", folder / "tokens"
    source = str(raw_dir) if raw_dir is not None else "collect"
    record = done(folder)
    if record is not None and record["raw"] != source:
        raise ValueError(f"{folder}: was prepared from {record['raw']}, not {source}; use another --out folder")
    if record is None:
        if raw_dir is None:
            raw_dir = folder / "raw"
            with runs("collect") as log:
                collect_datasets(cfg.collect, raw_dir, log=log)
        with runs("ingest") as log:  # CALVIN frames described as the ingest stage does (the L' prompt's ground truth)
            ingest_datasets(cfg.ingest, resolve_sources(cfg.ingest, raw_dir), ingested, describe=describe_scene,
                            log=log)
        with runs("tokenizer") as log:
            prepare_tokenizers(cfg.tokenizer, cfg.model, ingested, artifacts, seed=cfg.experiment.seed, log=log)
        with runs("pretokenize") as log:
            pretokenize_frames(cfg.pretokenize, cfg.model, artifacts / "vq", ingested, tokens, log=log)
        mark_done(folder, {"raw": source})
    return StageInputs.of(tokens_dir=tokens, ingested_dir=ingested, vq_dir=artifacts / "vq",
                          text_tokenizer_dir=artifacts / "text_tokenizer", init_model=None)


def train_once(stage: str, cfg: ProjectConfig, inputs: StageInputs, folder: Path, storage: Path,
               log: MetricLogger) -> dict[str, Any]:
    """Train `stage` into `folder` unless a finished model is there; returns its TrainSummary as a dict."""
    record = done(folder)
    if record is None:
        summary = train_stage(stage, cfg, inputs, folder, storage=storage, log=log)
        record = asdict(summary)
        mark_done(folder, record)
    else:
        log.set_tags({f"upvla.{stage}_reused": folder.name})
    return record


@ray.remote(num_cpus=0)
def pretrain_task(cfg: ProjectConfig, inputs: StageInputs, folder: str, storage: str, run: MlflowRun) -> str:
    """Stage 1 of one group of variants; returns its model folder."""
    return train_once("pretrain", cfg, inputs, Path(folder), Path(storage), run)["model_dir"]


@dataclass(frozen=True)
class TrialSpec:
    """The single-task trials every variant gets besides the chains: `trials` of each of `tasks`, same starts."""

    tasks: tuple[str, ...] = ARTICULATED
    trials: int = 20


def task_trials_once(cfg: ProjectConfig, model: str, folder: Path, spec: TrialSpec,
                     log: MetricLogger) -> dict[str, dict[str, int]]:
    """{task: {"successes", "trials"}} of `model`, run unless `folder` holds them for the same tasks and count.

    Logged to `log` either way, so a re-run's variant run shows the trials it reused.
    """
    path = folder / TRIALS_FILE
    wanted = {"tasks": list(spec.tasks), "trials": spec.trials}
    record = json.loads(path.read_text()) if path.is_file() else {}
    if {k: record.get(k) for k in wanted} == wanted:
        results = record["results"]
    else:
        found = evaluate_tasks(model, spec.tasks, trials=spec.trials, scene=cfg.env.scene,
                               ep_len=cfg.evaluate.ep_len, workers=cfg.evaluate.num_workers)
        results = {task: {"successes": r.successes, "trials": r.trials} for task, r in found.items()}
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**wanted, "results": results}, indent=2))
    successes, trials = sum(r["successes"] for r in results.values()), sum(r["trials"] for r in results.values())
    log.log_metrics({f"trials/{task}": r["successes"] / max(1, r["trials"]) for task, r in results.items()}
                    | {"trials/total_successes": successes, "trials/total": trials})
    return results


@ray.remote(num_cpus=0)
def variant_task(cfg: ProjectConfig, inputs: StageInputs, init_model: str | None, tune_folder: str,
                 eval_folder: str, storage: str, run: MlflowRun, trials: TrialSpec | None = None) -> dict[str, Any]:
    """Stage 2 of one variant (from `init_model`, stage 1's folder, when given), then its evaluation.

    Returns the evaluation's metrics, its per-chain lengths and, with `trials`, the single-task trials.
    """
    inputs = StageInputs.of(**{**asdict(inputs), "init_model": init_model})
    model = train_once("tune", cfg, inputs, Path(tune_folder), Path(storage), run)["model_dir"]
    summary = evaluate_checkpoint(cfg.evaluate, cfg.env, model, eval_folder, use_gpu=cfg.cluster.use_gpu, log=run,
                                  progress=False)
    out = summary.metrics() | {"chain_lengths": list(summary.chain_lengths)}
    if trials is not None and trials.trials > 0:
        out["task_trials"] = task_trials_once(cfg, model, Path(eval_folder), trials, run)
    return out


def variant_params(cfg: ProjectConfig) -> dict[str, Any]:
    """The parameters a variant's run records (the sections that can differ between presets)."""
    return flatten({section: to_dict(getattr(cfg, section)) for section in PARAM_SECTIONS})


def run_ablations(plan: AblationPlan, raw_dir: Path | None, paths: AblationPaths, *, target: TrackingTarget,
                  experiment: str, reports_dir: Path, trials: TrialSpec | None = None,
                  provenance: Mapping[str, Any] | None = None) -> AblationSummary:
    """Run the plan (see the module docstring); a failed variant is reported, the others still finish.

    Args:
        plan: the variants and the stages they share.
        raw_dir: folder of the raw calvin/, bridge/, llava/ datasets (unless ingest.*_dir name them);
            None = collect them with the `collect:` section (a shared stage like the others).
        paths: where keyed stage outputs go (shared by all nodes of the cluster).
        target: the MLflow store every task logs to.
        experiment: the MLflow experiment (`<prefix>-ablations`).
        reports_dir: gets table3.md / table1.md / results.json.
        trials: single-task trials of every variant (PlayTable only); None or 0 trials: chains only.
        provenance: how the run was asked for (params file, profile, overrides), shown above the tables with
            the commit, each variant's config key, the machine and the wall time.
    """
    first = plan.variants[0].cfg
    if trials is not None and trials.trials > 0 and first.env.name != "playtable":
        raise ValueError(f"env.name: single-task trials run in PlayTable, got {first.env.name!r} "
                         "(pass --task-trials 0)")
    seed = first.experiment.seed
    begin = time.perf_counter()
    tags = {"upvla.presets": ",".join(v.preset for v in plan.variants)}
    with start_run(target, experiment, run_name("ablations", "all", seed), tags=tags) as parent:

        def child(name: str, **tags: Any) -> Any:
            return start_run(target, experiment, name, parent_run_id=parent.run_id, tags={"upvla.role": "stage",
                                                                                          **tags})

        inputs = prepare_data(first, raw_dir, paths.stage("data", plan.data_key),
                              lambda stage: child(run_name(stage, "shared", seed)))
        results, failed = _run_variants(plan, inputs, paths, target, experiment, parent.run_id, trials)
        about = {**(provenance or {}), **run_provenance(plan, time.perf_counter() - begin, trials)}
        tables = write_tables(results, failed, reports_dir, parent, setting=evaluation_setting(first),
                              provenance=about)
    return AblationSummary(parent.run_id, results, failed, tables)


def evaluation_setting(cfg: ProjectConfig) -> str:
    """What the variants were trained and evaluated on, for the tables' titles (e.g. `CALVIN D->D in playtable`)."""
    train = "".join(cfg.collect.train_scenes) if cfg.env.name == "playtable" else "dataset"
    return f"CALVIN {train}->{cfg.env.scene}, {cfg.env.name}"


def run_provenance(plan: AblationPlan, wall_s: float, trials: TrialSpec | None) -> dict[str, str]:
    """The commit, config keys, machine and wall time behind a table."""
    tags = source_tags()
    commit = tags.get("mlflow.source.git.commit", tags.get("upvla.git.commit", "unknown"))
    if "upvla.git.checkout" in tags:  # a `ray job submit` copy: the commit of the checkout it came from
        commit += f" (of {tags['upvla.git.checkout']}; the job ran a copy of it)"
    if tags.get("upvla.git.dirty") == "true":
        commit += " (with uncommitted changes)"
    first = plan.variants[0].cfg
    about = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "config keys (stage 2, per variant)": ", ".join(f"{v.preset} {v.tune_key}" for v in plan.variants),
             "data key": plan.data_key, "seed": str(first.experiment.seed),
             "chains": f"CALVIN's first {first.evaluate.num_sequences} evaluation chains, ep_len "
                       f"{first.evaluate.ep_len}",
             "machine": machine_description(), "wall time": f"{wall_s / 60:.1f} min (this invocation; "
                                                            "reused stages not included)"}
    if trials is not None and trials.trials > 0:
        about["single-task trials"] = f"{trials.trials} of each of {', '.join(trials.tasks)}"
    return about


def machine_description() -> str:
    """CPU model and count, memory, GPU and torch version of this machine."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} CPUs{memory}, {gpu}, {platform.system()}, torch {torch.__version__}"


def _run_variants(plan: AblationPlan, inputs: StageInputs, paths: AblationPaths, target: TrackingTarget,
                  experiment: str, parent_id: str,
                  trials: TrialSpec | None) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    seed = plan.variants[0].cfg.experiment.seed
    stage1: dict[str, tuple[Any, MlflowRun]] = {}
    for key, group in plan.pretrain_groups().items():
        name = run_name("pretrain", "+".join(v.preset for v in group), seed)
        run = create_run(target, experiment, name, parent_run_id=parent_id,
                         tags={"upvla.role": "stage", "upvla.key": key}, inputs=training_datasets(inputs))
        ref = pretrain_task.remote(group[0].cfg, inputs, str(paths.stage("pretrain", key)), str(paths.storage), run)
        stage1[key] = (ref, run)
    pending: dict[str, tuple[Any, MlflowRun]] = {}
    for variant in plan.variants:
        run = create_run(target, experiment, run_name("ablation", variant.preset, seed), parent_run_id=parent_id,
                         tags=_variant_tags(variant, stage1), params=variant_params(variant.cfg),
                         inputs=training_datasets(inputs))
        init = stage1[variant.pretrain_key][0] if variant.pretrain_key else None
        tune_folder = paths.stage("tune", variant.tune_key)
        eval_folder = paths.stage(f"evaluate-{variant.preset}", variant.tune_key)
        ref = variant_task.remote(variant.cfg, inputs, init, str(tune_folder), str(eval_folder), str(paths.storage),
                                  run, trials)
        pending[variant.preset] = (ref, run)
    for ref, run in stage1.values():
        _finish(ref, run)
    results, failed = {}, {}
    for preset, (ref, run) in pending.items():
        outcome = _finish(ref, run)
        if isinstance(outcome, Exception):
            failed[preset] = "".join(traceback.format_exception_only(outcome)).strip()
        else:
            results[preset] = outcome
    return results, failed


def _variant_tags(variant: Variant, stage1: dict[str, tuple[Any, MlflowRun]]) -> dict[str, Any]:
    tags = {"preset": variant.preset, "upvla.role": "variant", "upvla.tune_key": variant.tune_key}
    if variant.pretrain_key:
        tags |= {"upvla.pretrain_key": variant.pretrain_key,
                 "upvla.pretrain_run": stage1[variant.pretrain_key][1].run_id}
    return tags


def _finish(ref: Any, run: MlflowRun) -> Any:
    """Wait for a task and end its run FINISHED, or FAILED returning the task's exception."""
    try:
        value = ray.get(ref)
    except Exception as err:  # a stage's own error (RayTaskError wraps it) fails this variant only
        end_run(run, "FAILED")
        return err
    end_run(run, "FINISHED")
    return value


def write_tables(results: dict[str, dict[str, Any]], failed: dict[str, str], reports_dir: Path,
                 parent: MlflowRun, *, setting: str = "CALVIN",
                 provenance: Mapping[str, Any] | None = None) -> dict[str, str]:
    """table3.md / table1.md / results.json into `reports_dir`, logged to the parent run under `tables/`."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    tables = ablation_tables(results, setting=setting, provenance=provenance)
    for name, text in tables.items():
        (reports_dir / name).write_text(text)
    (reports_dir / "results.json").write_text(json.dumps({"results": results, "failed": failed,
                                                          "provenance": dict(provenance or {})}, indent=2))
    parent.log_metrics({f"avg_seq_len/{preset}": m["avg_seq_len"] for preset, m in results.items()})
    parent.log_artifact(reports_dir, "tables")
    return tables

"""Stage-2 hyper-parameter sweep: Optuna's TPE through Ray Tune, a resumable study, one MLflow run per trial.

    summary = run_sweep(cfg, inputs, paths, target=t, experiment="upvla-sweep")

Searches `sweep.lambda_pre`, `sweep.lambda_mmu` and `sweep.lr` (log-uniform) for the `tune` stage, every
trial training stage 2 with the real stage function (Ray Train) from the same inputs and then, for the
`avg_seq_len` objective, evaluating it with CALVIN's protocol (`evaluate:`). The `train_loss` objective
(stage 2's last logged training loss) skips the rollouts: a cheaper, noisier proxy, not a held-out loss.

Resuming: the Optuna study lives in `sweep.storage` (sqlite). A re-run loads it, marks trials a killed
run left RUNNING as FAIL, and runs only the trials still missing to reach `sweep.num_trials`; TPE sees
every finished trial, and its seed is offset by the finished trials, so a resumed study does not replay
the start-up points already evaluated (a failed trial's point may be tried again). A trial's stage-2
model is keyed by its config (components.experiments.ablations.tune_key), so a trial re-suggested with identical
values reuses the trained model.

MLflow (experiment `<prefix>-sweep`): a parent run per invocation `sweep-<study>-s<seed>`, a child per
trial `trial-<Tune trial id>-s<seed>` with the sampled values as params and the losses, evaluation metrics and
objective as metrics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.core.config import ProjectConfig, SweepConfig
from components.core.tracking import MlflowRun, TrackingTarget, create_run, end_run, run_name, start_run
from components.evaluation.evaluate import evaluate_checkpoint
from components.experiments.ablation_runs import AblationPaths, prepare_data, train_once
from components.experiments.ablations import data_key, pretrain_key, tune_key
from components.training.inputs import StageInputs
from components.training.train import fit_restoring_sigint

SEARCHED = ("lambda_pre", "lambda_mmu", "lr")
MODES = {"avg_seq_len": "max", "train_loss": "min"}
TRIAL_CPUS = 0.1


@dataclass(frozen=True)
class TrialJob:
    """What every trial needs besides its sampled values (sent once through Ray's object store)."""

    cfg: ProjectConfig
    inputs: StageInputs
    paths: AblationPaths
    target: TrackingTarget
    experiment: str
    parent_run_id: str


@dataclass(frozen=True)
class SweepSummary:
    """The study after this invocation."""

    study: str
    storage: str
    # finished trials before this invocation, trials this invocation ran, and those of them that failed
    trials_before: int
    trials_run: int
    trials_failed: int
    # the best finished trial of the whole study: number, objective value, sampled values (None: none finished)
    best_number: int | None
    best_value: float | None
    best_params: dict[str, float]
    parent_run_id: str


def storage_url(cfg: SweepConfig, root: Path) -> str:
    """The Optuna storage URL of the study (its folder is created)."""
    path = (root / cfg.storage).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def finished_trials(url: str, study: str) -> int:
    """Trials of `study` that completed; trials a killed run left RUNNING are marked FAIL first."""
    import optuna

    if study not in {s.study_name for s in optuna.get_all_study_summaries(url)}:
        return 0
    loaded = optuna.load_study(study_name=study, storage=url)
    for trial in loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        loaded.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def trial_config(cfg: ProjectConfig, values: dict[str, float]) -> ProjectConfig:
    """`cfg` with the sampled stage-2 values."""
    return dataclasses.replace(cfg, tune=dataclasses.replace(cfg.tune, **{k: float(values[k]) for k in SEARCHED}))


def evaluate_outside_trial(cfg: ProjectConfig, model: str, out_dir: Path, run: MlflowRun) -> float:
    """CALVIN evaluation of `model` from a task outside the trial's placement group; returns avg_seq_len.

    Tune places a trial's child tasks and actors in the trial's placement group, sized for the trial
    alone; the rollout actors reserve their own CPUs (`evaluate.cpus_per_worker`) and must be scheduled
    on the cluster like any evaluation.
    """
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    task = ray.remote(num_cpus=0)(evaluate_checkpoint).options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
    summary = ray.get(task.remote(cfg.evaluate, cfg.env, model, out_dir, use_gpu=cfg.cluster.use_gpu, log=run,
                                  progress=False))
    return summary.calvin.avg_seq_len


def run_trial(values: dict[str, Any], job: TrialJob) -> None:
    """The Tune trainable: train stage 2 with `values`, evaluate if the objective needs it, report once."""
    from ray import tune

    cfg = trial_config(job.cfg, values)
    key = tune_key(cfg)
    run = create_run(job.target, job.experiment, run_name("trial", tune.get_context().get_trial_id(),
                                                          cfg.experiment.seed),
                     parent_run_id=job.parent_run_id, tags={"upvla.tune_key": key},
                     params={f"tune.{k}": values[k] for k in SEARCHED})
    try:
        trained = train_once("tune", cfg, job.inputs, job.paths.stage("tune", key), job.paths.storage, run)
        result = {"train_loss": float(trained["final"]["loss"])}
        if job.cfg.sweep.objective == "avg_seq_len":
            result["avg_seq_len"] = evaluate_outside_trial(cfg, trained["model_dir"], job.paths.stage("evaluate", key),
                                                           run)
        run.log_metrics({"objective": result[job.cfg.sweep.objective]})
    except BaseException:
        end_run(run, "FAILED")
        raise
    end_run(run, "FINISHED")
    tune.report(result)


def prepare_inputs(cfg: ProjectConfig, raw_dir: Path | None, paths: AblationPaths, *, target: TrackingTarget,
                   experiment: str) -> StageInputs:
    """Stage 2's inputs: the shared data stages and, when tune.init_from is pretrain, stage 1 (each keyed, once)."""
    seed = cfg.experiment.seed
    inputs = prepare_data(cfg, raw_dir, paths.stage("data", data_key(cfg)),
                          lambda stage: start_run(target, experiment, run_name(stage, "shared", seed)))
    if cfg.tune.init_from != "pretrain":
        return inputs
    with start_run(target, experiment, run_name("pretrain", "shared", seed)) as run:
        model = train_once("pretrain", cfg, inputs, paths.stage("pretrain", pretrain_key(cfg)), paths.storage, run)
    return dataclasses.replace(inputs, init_model=model["model_dir"])


def run_sweep(cfg: ProjectConfig, inputs: StageInputs, paths: AblationPaths, *, root: Path,
              target: TrackingTarget, experiment: str) -> SweepSummary:
    """Run the missing trials of the study (see the module docstring) on the connected Ray.

    Args:
        cfg: the resolved config; `sweep:` drives the search, `tune:`/`evaluate:` every trial.
        inputs: stage 2's inputs (tokens, tables, tokenizers, and stage 1's model when tune.init_from is pretrain).
        paths: keyed stage-2 models and evaluations, and Ray storage.
        root: the folder `sweep.storage` is relative to.
        target: the MLflow store.
        experiment: the MLflow experiment (`<prefix>-sweep`).
    """
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    sweep, url = cfg.sweep, storage_url(cfg.sweep, root)
    before = finished_trials(url, sweep.study)
    todo = max(0, sweep.num_trials - before)
    space = {name: tune.loguniform(*getattr(sweep, name)) for name in SEARCHED}
    with start_run(target, experiment, run_name("sweep", sweep.study, cfg.experiment.seed),
                   tags={"optuna.study": sweep.study, "optuna.storage": url}) as parent:
        if todo:
            job = TrialJob(cfg, inputs, paths, target, experiment, parent.run_id)
            searcher = OptunaSearch(metric=sweep.objective, mode=MODES[sweep.objective], study_name=sweep.study,
                                    storage=optuna.storages.RDBStorage(url), seed=sweep.seed + before)
            tuner = tune.Tuner(
                # a trial only drives its Train workers and rollout actors (they reserve the CPUs); Tune refuses 0
                tune.with_resources(tune.with_parameters(run_trial, job=job), {"cpu": TRIAL_CPUS}),
                param_space=space,
                tune_config=tune.TuneConfig(search_alg=searcher, num_samples=todo,
                                            max_concurrent_trials=sweep.max_concurrent),
                run_config=tune.RunConfig(name=f"sweep-{sweep.study}", storage_path=str(paths.storage.resolve())))
            failed = sum(result.error is not None for result in fit_restoring_sigint(tuner))  # Tune leaves its handler
        summary = _summarize(url, sweep, before, todo, failed if todo else 0, parent.run_id)
        if summary.best_value is not None:
            parent.log_metrics({"best_objective": summary.best_value})
            parent.log_params({f"best.{k}": v for k, v in summary.best_params.items()})
    return summary


def _summarize(url: str, sweep: SweepConfig, before: int, ran: int, failed: int, parent_run_id: str) -> SweepSummary:
    import optuna

    study = optuna.load_study(study_name=sweep.study, storage=url)
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return SweepSummary(sweep.study, url, before, ran, failed, None, None, {}, parent_run_id)
    best = study.best_trial
    return SweepSummary(sweep.study, url, before, ran, failed, best.number, float(best.value), dict(best.params),
                        parent_run_id)

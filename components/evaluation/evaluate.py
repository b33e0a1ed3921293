"""The `evaluate` stage: CALVIN's long-horizon protocol on parallel Ray actors, resumable, with CALVIN's outputs.

`evaluate_checkpoint` evaluates a UP-VLA checkpoint (a folder, `runs:/<id>/<path>` or a run id);
`evaluate_policy` evaluates any policy factory (scripted experts, other models) the same way. The
first `num_sequences` of CALVIN's official 1000 chains run on `num_workers` actors
(components/evaluation/rollout_workers.py). Every finished chain is appended to a results log at once, and a
re-run skips the chains already there (the log is keyed by what is evaluated, so a new checkpoint
never inherits old results). The metrics are computed from the log by `envs.protocol.summarize`, so
they do not depend on the number of actors or the order chains finished in.

Outputs in `out_dir`:
    results.json               CALVIN's file: {checkpoint: {avg_seq_len, chain_sr, task_info}}
    logs/chains-<key>.jsonl    the results log (and chains-<key>.json: what <key> stands for)
    task_success.png           per-task success bar chart
    videos/chain_<i>.gif       rollout videos of the first `num_videos` chains (camera | predicted frame)

Run: `python -m workflows.evaluate [--checkpoint DIR | --run-id ID]` (or `dvc repro evaluate`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from components.core.checkpoint_refs import resolve_checkpoint
from components.core.config import EvaluateConfig
from components.core.tracking import NULL_LOGGER, DatasetRef, MetricLogger, TrackingTarget, folder_dataset
from components.evaluation.inference import InferenceServer, LocalVLAFactory, SharedVLAFactory, choose_inference
from components.evaluation.policy import checkpoint_digest
from components.evaluation.results_log import ResultsLog
from components.evaluation.rollout import ChainOutcome, PolicyFactory
from components.evaluation.rollout_workers import WorkerSpec, run_rollouts
from components.reporting.plots import plot_task_success
from envs.config import EnvConfig
from envs.protocol import ChainResult, EvalSummary, summarize, write_results_json
from envs.sequences import get_sequences
from model.pretrained import CONFIG_NAME, read_config


@dataclass(frozen=True)
class EvaluateSummary:
    """CALVIN's metrics of the evaluated chains and what this invocation did to get them."""

    name: str
    calvin: EvalSummary
    chains_run: int
    chains_resumed: int
    env_steps: int
    steps_per_s: float
    inference: str
    worker_failures: int
    # subtasks completed by each chain, in chain-index order (bootstrap intervals, paired comparisons)
    chain_lengths: tuple[int, ...] = ()

    def metrics(self) -> dict[str, Any]:
        """metrics/eval.json: average length, chain success 1..5, per-task success rate."""
        info = self.calvin.task_info
        return {"num_chains": self.calvin.num_chains, "avg_seq_len": self.calvin.avg_seq_len,
                "chain_sr": {str(i): rate for i, rate in self.calvin.chain_sr.items()},
                "task_success": {task: v["success"] / v["total"] for task, v in info.items()}}

    def mlflow_metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow."""
        flat = {"avg_seq_len": self.calvin.avg_seq_len, "num_chains": self.calvin.num_chains,
                "steps_per_s": self.steps_per_s, "worker_failures": self.worker_failures}
        flat |= {f"chain_sr_{i}": rate for i, rate in self.calvin.chain_sr.items()}
        return flat | {f"task_sr/{task}": rate for task, rate in self.metrics()["task_success"].items()}


def chain_dataset(chains: list, env: EnvConfig) -> DatasetRef:
    """The evaluation chains as an MLflow dataset input (digest over their initial states and tasks)."""
    digest = hashlib.sha256(json.dumps(chains, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return DatasetRef(f"calvin-chains-{env.name}-{env.scene}-{len(chains)}", digest,
                      f"envs.sequences.get_sequences(1000)[:{len(chains)}] in {env.name} scene {env.scene}",
                      "evaluation", source_type="code")


def evaluate_checkpoint(cfg: EvaluateConfig, env: EnvConfig, checkpoint: str | Path, out_dir: str | Path, *,
                        target: TrackingTarget | None = None, use_gpu: bool = False, log: MetricLogger = NULL_LOGGER,
                        progress: bool = True) -> EvaluateSummary:
    """Evaluate a UP-VLA checkpoint (folder, `runs:/<id>/<path>` or run id; needs `target` for runs).

    The model runs in every actor or in one shared inference actor (`cfg.inference`); on a GPU when
    `use_gpu` and the Ray cluster has one.
    """
    folder = resolve_checkpoint(checkpoint, target)
    log.log_inputs([folder_dataset(folder, "policy", name=f"checkpoint {checkpoint}")])
    gpus = ray.cluster_resources().get("GPU", 0.0) if use_gpu else 0.0
    mode, device = choose_inference(cfg.inference, gpus > 0), "cuda" if gpus > 0 else "cpu"
    # every forward runs on this many rows (padded), so a chain's result does not depend on which other
    # chains replan with it: the env slots one policy serves
    slots = cfg.envs_per_worker if cfg.batched_inference else 1
    rows = slots if mode == "local" else slots * cfg.num_workers
    identity = {"checkpoint_sha256": checkpoint_digest(folder), "precision": cfg.precision, "batch_rows": rows}
    threads = max(1, int(cfg.cpus_per_worker))
    if mode == "local":
        factory = LocalVLAFactory(str(folder), device, cfg.precision, batch_size=rows)
        return evaluate_policy(cfg, env, factory, out_dir, name=str(checkpoint), identity=identity, log=log,
                               gpus_per_worker=min(1.0, gpus / cfg.num_workers), progress=progress)
    server = ray.remote(InferenceServer).options(num_cpus=cfg.cpus_per_worker, num_gpus=min(1.0, gpus),
                                                 max_restarts=cfg.worker_restarts)
    handle = server.remote(str(folder), device=device, precision=cfg.precision, threads=threads, batch_size=rows)
    try:
        factory = SharedVLAFactory(handle, read_config(folder / CONFIG_NAME)[0].delta_t)
        return evaluate_policy(cfg, env, factory, out_dir, name=str(checkpoint), identity=identity,
                               log=log, inference="shared", reserved_cpus=cfg.cpus_per_worker, progress=progress)
    finally:
        ray.kill(handle)


def evaluate_policy(cfg: EvaluateConfig, env: EnvConfig, policy: PolicyFactory, out_dir: str | Path, *, name: str,
                    identity: Mapping[str, Any], inference: str = "local", reserved_cpus: float = 0.0,
                    gpus_per_worker: float = 0.0, cameras: bool = True, log: MetricLogger = NULL_LOGGER,
                    progress: bool = True) -> EvaluateSummary:
    """Run (or resume) the evaluation of `policy` and write the outputs listed in the module docstring.

    Args:
        cfg: the `evaluate:` section.
        env: the environment every actor builds.
        policy: builds each actor's policy (picklable).
        out_dir: output folder (kept between runs: it holds the results log).
        name: the key of this evaluation in results.json (e.g. the checkpoint reference).
        identity: what is evaluated (e.g. the checkpoint digest); with the env and ep_len it keys the log.
        inference: where the policy runs (recorded in the summary).
        reserved_cpus: CPUs held for the run outside the rollout actors (a shared inference actor).
        gpus_per_worker: GPUs per rollout actor.
        cameras: render the cameras (False for privileged policies; no videos then).
        log: MLflow run (metrics, results.json, chart, videos).
        progress: show the progress bar.
    """
    out_dir = Path(out_dir)
    all_chains = get_sequences(1000)
    log.log_inputs([chain_dataset(all_chains[:cfg.num_sequences], env)])
    description = {**identity, "env": env.name, "scene": env.scene, "ep_len": cfg.ep_len,
                   "calvin_dataset_path": env.calvin_dataset_path}
    results_log = ResultsLog(out_dir / "logs", description)
    results = {i: r for i, r in results_log.load(all_chains).items() if i < cfg.num_sequences}
    resumed = len(results)
    todo = [(i, all_chains[i]) for i in range(cfg.num_sequences) if i not in results]
    spec = WorkerSpec(env, policy, cfg.envs_per_worker, cfg.ep_len, cfg.batched_inference,
                      max(1, int(cfg.cpus_per_worker)),
                      frozenset(i for i, _ in todo if i < cfg.num_videos and cameras), cameras)
    bar = _ChainBar(cfg.num_sequences, results, enabled=progress)

    def record(outcome: ChainOutcome) -> None:
        results_log.append(outcome.result, outcome.seconds)
        if outcome.video is not None:
            (out_dir / "videos").mkdir(parents=True, exist_ok=True)
            (out_dir / "videos" / f"chain_{outcome.result.index:04d}.gif").write_bytes(outcome.video)
        results[outcome.result.index] = outcome.result
        bar.finished(outcome.result)

    try:
        stats = run_rollouts(spec, todo, num_workers=cfg.num_workers, cpus_per_worker=cfg.cpus_per_worker,
                             gpus_per_worker=gpus_per_worker, max_restarts=cfg.worker_restarts,
                             reserved_cpus=reserved_cpus, on_outcome=record, on_start=bar.started)
    finally:
        bar.close()
    summary = EvaluateSummary(name, summarize(results.values()), stats.chains, resumed, stats.env_steps,
                              stats.steps_per_s, inference, stats.worker_failures,
                              tuple(results[i].completed for i in sorted(results)))
    write_outputs(summary, out_dir, log)
    return summary


def write_outputs(summary: EvaluateSummary, out_dir: Path, log: MetricLogger) -> None:
    """results.json, the per-task bar chart, and everything to MLflow."""
    results_json = write_results_json(summary.calvin, out_dir / "results.json", checkpoint=summary.name)
    figure = plot_task_success(summary.calvin.task_info, num_chains=summary.calvin.num_chains)
    figure.savefig(out_dir / "task_success.png", dpi=100)
    log.log_metrics(summary.mlflow_metrics())
    log.log_artifact(results_json)
    log.log_figure(figure, "plots/task_success.png")
    if (out_dir / "videos").is_dir():
        log.log_artifact(out_dir / "videos", "videos")


class _ChainBar:
    """tqdm bar: chains done of the total, chains running, running average length and 1-task success."""

    def __init__(self, total: int, done: Mapping[int, ChainResult], enabled: bool) -> None:
        self.completed = [r.completed for r in done.values()]
        self.running: set[int] = set()
        self.bar = tqdm(total=total, initial=len(done), desc="evaluate", unit="chain", disable=not enabled)
        self._show()

    def started(self, index: int) -> None:
        self.running.add(index)
        self._show()

    def finished(self, result: ChainResult) -> None:
        self.running.discard(result.index)
        self.completed.append(result.completed)
        self.bar.update(1)
        self._show()

    def _show(self) -> None:
        if self.completed:
            n = len(self.completed)
            self.bar.set_postfix(running=len(self.running), avg_len=f"{sum(self.completed) / n:.2f}",
                                 sr1=f"{sum(c >= 1 for c in self.completed) / n:.0%}", refresh=False)

    def close(self) -> None:
        self.bar.close()

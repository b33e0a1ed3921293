"""The `pretrain` and `tune` stages: the training loop on Ray Train, then the model folder for later stages.

    summary = pretrain(cfg, inputs, Path("artifacts/pretrain"), storage=Path("ray_results/pretrain"), log=run)
    summary = tune(cfg, inputs, Path("artifacts/tune"), storage=Path("ray_results/tune"), log=run)  # from stage 1

Both run `components.training.loop.train_worker` in a `TorchTrainer` (`num_workers` ranks, gloo on CPU,
NCCL on GPU, DDP or FSDP2). Ray persists the full-state checkpoints under `storage` (the workflows use
`ray_results/<stage>`), keeps `keep_checkpoints` of them and restarts a failed worker group from the
newest one up to `max_failures` times.
The Ray run is named after a fingerprint of the stage's config and inputs, so re-running an interrupted
stage (a killed `dvc repro`) resumes it, while any change of config or data starts a fresh run.

Outputs: `<out_dir>/model/` (`VLAModel.save_pretrained`; the tune stage adds the evaluate stage's
`policy.json`), also logged to MLflow as the run's `model` artifact; the returned `TrainSummary` is what
the workflow writes to `metrics/<stage>.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from components.core.config import ProjectConfig, flatten, to_dict
from components.core.tracking import NULL_LOGGER, DatasetRef, MetricLogger, folder_dataset
from components.evaluation.policy import PolicySettings, save_policy_settings
from components.training.ema import EMA_FILE
from components.training.inputs import StageInputs
from components.training.loop import TrainJob, train_worker
from components.training.session import RaySession
from components.training.state import MODEL_DIR
from model.vla import VLAModel

STAGES = ("pretrain", "tune")
# metrics of the last logging window copied into the summary (those the model computes for the stage)
SUMMARY_KEYS = ("loss", "mmu", "pre", "act", "act_pose_mse", "act_gripper_bce", "grad_norm", "lr", "samples_per_s")


@dataclass(frozen=True)
class TrainSummary:
    """A finished stage (also `metrics/<stage>.json`)."""

    stage: str
    steps: int
    # step the last worker group started from (0 = a fresh run; > 0 after a restart or a resumed re-run)
    resumed_from_step: int
    # the last logging window's means: loss terms, grad norm, lr, samples/s (all ranks)
    final: dict[str, float]
    # wall-clock seconds of the Ray Train run, start-up and restarts included
    wall_s: float
    model_dir: str
    # the Ray run (under the stage's runs folder) holding the full-state checkpoints
    ray_run: str

    def metrics(self) -> dict[str, Any]:
        """The DVC metrics dict."""
        return asdict(self)


def fingerprint(cfg: ProjectConfig, stage: str, inputs: StageInputs) -> str:
    """12 hex digits of the stage's config, seed and input files (names, sizes, mtimes)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([stage, to_dict(getattr(cfg, stage)), to_dict(cfg.model), cfg.experiment.seed],
                             sort_keys=True).encode())
    for folder in asdict(inputs).values():
        for path in sorted(Path(folder).rglob("*")) if folder else []:
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def _ray_train_worker(config: dict[str, Any]) -> None:
    """TorchTrainer's `train_loop_per_worker`: the loop with this worker's Ray session."""
    torch.set_num_threads(config["threads"])
    train_worker(config["job"], RaySession())


def run_ray_training(job: TrainJob, *, storage: Path, name: str, use_gpu: bool) -> Any:
    """Fit `job` with a TorchTrainer; returns Ray's `Result` (its `checkpoint` is the final state)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg = job.train
    trainer = TorchTrainer(
        _ray_train_worker,
        train_loop_config={"job": job, "threads": cfg.cpus_per_worker},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cfg.cpus_per_worker,
                                                                     **({"GPU": 1} if use_gpu else {})}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage.resolve()),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints)),
    )
    return fit_restoring_sigint(trainer)


def fit_restoring_sigint(trainer: Any) -> Any:
    """`trainer.fit()` (a Ray Train trainer or a Ray Tune `Tuner`), then the SIGINT handler the caller had.

    Ray Train (and Ray Tune) installs a handler (Ctrl-C aborts the run gracefully) and leaves it installed after `fit`
    returns, so later Ctrl-Cs in the same process (a notebook, the robot's stop-on-Ctrl-C, a test session)
    would be swallowed instead of raising KeyboardInterrupt.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if in_main_thread else None
    try:
        return trainer.fit()
    finally:
        # signal.signal only works from the main thread; Ray installs nothing elsewhere either
        if in_main_thread:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def export_model(result: Any, out_dir: Path, *, mmu_condition: bool | None) -> Path:
    """Write the final checkpoint's model to `out_dir/model` (+ policy.json when given).

    The checkpoint's model folder as it is, or, when the stage kept a weight average (`ema_decay` > 0), that
    folder with the averaged weights in place of the live ones.
    """
    target = out_dir / MODEL_DIR
    shutil.rmtree(target, ignore_errors=True)
    with result.checkpoint.as_directory() as folder:
        averaged = Path(folder) / EMA_FILE
        if averaged.is_file():
            save_averaged_model(Path(folder) / MODEL_DIR, averaged, target)
        else:
            shutil.copytree(Path(folder) / MODEL_DIR, target)
    if mmu_condition is not None:
        save_policy_settings(target, PolicySettings(mmu_condition=mmu_condition))
    return target


def save_averaged_model(model_dir: Path, averaged: Path, target: Path) -> None:
    """`model_dir`'s model with the trained parameters replaced by the average in `averaged`, saved to `target`."""
    model = VLAModel.from_pretrained(model_dir)
    tensors = load_file(str(averaged))
    known = dict(model.named_parameters())
    for name, tensor in tensors.items():
        if name not in known or known[name].shape != tensor.shape:
            raise ValueError(f"{averaged}: {name}: not a parameter of the model in {model_dir} with shape "
                             f"{tuple(tensor.shape)}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            known[name].copy_(tensor.to(known[name].dtype))
    model.save_pretrained(target)


def train_stage(stage: str, cfg: ProjectConfig, inputs: StageInputs, out_dir: Path, *, storage: Path,
                log: MetricLogger = NULL_LOGGER) -> TrainSummary:
    """Run one training stage on the Ray already connected (see the module docstring).

    Args:
        stage: "pretrain" or "tune" (the config section).
        cfg: the resolved project config (preset applied).
        inputs: data, tokenizers and the starting model folder (stage 2 from stage 1's).
        out_dir: gets `model/`.
        storage: Ray Train's storage for the full-state checkpoints (shared by all nodes of a cluster).
        log: the MLflow run; rank 0 logs per-step metrics and grids into it, the driver the model.
    """
    if stage not in STAGES:
        raise ValueError(f"stage: one of {STAGES}, got {stage!r}")
    train = getattr(cfg, stage)
    if (train.init_from == "pretrain") != (inputs.init_model is not None):
        raise ValueError(f"{stage}.init_from: {train.init_from!r}, but the inputs "
                         f"{'lack' if inputs.init_model is None else 'name'} a starting model folder")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    job = TrainJob(stage=stage, train=train, model=cfg.model, seed=cfg.experiment.seed, inputs=inputs,
                   strategy=train.strategy, log=log)
    name = f"{stage}-{fingerprint(cfg, stage, inputs)}"
    start = time.perf_counter()
    result = run_ray_training(job, storage=storage, name=name, use_gpu=cfg.cluster.use_gpu)
    wall = time.perf_counter() - start
    model_dir = export_model(result, out_dir, mmu_condition=train.mmu_condition if stage == "tune" else None)
    log.log_artifact(model_dir, "model")
    metrics = result.metrics or {}
    return TrainSummary(stage=stage, steps=int(metrics.get("step", train.steps)),
                        resumed_from_step=int(metrics.get("resumed_from_step", 0)),
                        final={k: float(metrics[k]) for k in SUMMARY_KEYS if k in metrics}, wall_s=wall,
                        model_dir=str(model_dir), ray_run=name)


def pretrain(cfg: ProjectConfig, inputs: StageInputs, out_dir: Path, *, storage: Path,
             log: MetricLogger = NULL_LOGGER) -> TrainSummary:
    """Stage 1: future prediction (+ understanding co-training) from the backbone."""
    return train_stage("pretrain", cfg, inputs, out_dir, storage=storage, log=log)


def tune(cfg: ProjectConfig, inputs: StageInputs, out_dir: Path, *, storage: Path,
         log: MetricLogger = NULL_LOGGER) -> TrainSummary:
    """Stage 2: prediction with action (+ understanding, L' prompt) from stage 1's model or the backbone."""
    return train_stage("tune", cfg, inputs, out_dir, storage=storage, log=log)


# --------------------------------------------------------------------------- entry-point helpers


def add_input_args(parser: argparse.ArgumentParser, *, stage: str) -> None:
    """The input/output flags of `workflows/{pretrain,tune}.py`, defaulting to the DVC layout."""
    parser.add_argument("--tokens", default="data/tokens", help="the pretokenize stage's output")
    parser.add_argument("--ingested", default="data/ingested", help="the ingest stage's output")
    parser.add_argument("--vq", default="artifacts/vq", help="the tokenizer stage's VQ folder")
    parser.add_argument("--text-tokenizer", default="artifacts/text_tokenizer", help="the text tokenizer folder")
    parser.add_argument("--out", default=f"artifacts/{stage}", help="gets model/")
    parser.add_argument("--storage", default=f"ray_results/{stage}", help="full-state checkpoints (Ray storage)")
    parser.add_argument("--metrics", default=f"metrics/{stage}.json", help="DVC metrics file")


def stage_inputs(args: argparse.Namespace, *, init_model: str | None) -> StageInputs:
    """`StageInputs` from the flags of `add_input_args`."""
    return StageInputs.of(tokens_dir=args.tokens, ingested_dir=args.ingested, vq_dir=args.vq,
                          text_tokenizer_dir=args.text_tokenizer, init_model=init_model)


def training_datasets(inputs: StageInputs) -> list[DatasetRef]:
    """The training data of a stage as MLflow dataset inputs: the token shards and the ingested tables."""
    return [folder_dataset(inputs.tokens_dir, "training"), folder_dataset(inputs.ingested_dir, "training")]


def stage_datasets(inputs: StageInputs) -> list[DatasetRef]:
    """What a stage reads, as MLflow dataset inputs: its training data and the model it starts from."""
    datasets = training_datasets(inputs)
    if inputs.init_model is not None:
        return [*datasets, folder_dataset(inputs.init_model, "initial model")]
    return [*datasets, folder_dataset(inputs.vq_dir, "initial model"),
            folder_dataset(inputs.text_tokenizer_dir, "initial model")]


def stage_params(cfg: ProjectConfig, stage: str) -> dict[str, Any]:
    """MLflow parameters of a stage run: its section, the model and the experiment, flattened."""
    return (flatten(to_dict(getattr(cfg, stage)), f"{stage}.") | flatten(to_dict(cfg.model), "model.")
            | flatten(to_dict(cfg.experiment), "experiment."))

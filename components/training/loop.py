"""The training loop of both stages, as run by every worker (Ray Train, or one plain process).

    job = TrainJob(stage="tune", train=cfg.tune, model=cfg.model, seed=0, inputs=inputs, strategy="ddp", log=run)
    train_worker(job, RaySession())          # inside TorchTrainer's train_loop_per_worker
    train_worker(job, LocalSession(folder))  # one process, no Ray

Per optimiser step: `grad_accum` micro-batches from the stage's data stream (components/training/inputs.py),
their current-frame codes corrupted when `code_noise` > 0 (components/training/augment.py),
`train_step` (bf16 autocast, clipping, AdamW, warm-up + cosine), then the weight average
(components/training/ema.py) when `ema_decay` > 0. Before each step a `ThreadGuard`
(components/core/threads.py) runs one torch thread while other processes take the cores. Every
`log_every` steps the window means of every loss term, the learning rate, the gradient norm, throughput
and the torch threads in use go to MLflow (rank 0; averaged over ranks); every `image_every` steps a
predicted-vs-true future-frame grid; every `checkpoint_every` steps and at the end a full-state
checkpoint (components/training/state.py) reported to the session, which resumes from the newest one
after an interruption or a lost worker.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from components.core.config import TrainConfig
from components.core.threads import ThreadGuard
from components.core.tracking import MetricLogger
from components.reporting.frame_grids import prediction_grid
from components.training.augment import corrupt_codes, noise_generator
from components.training.ema import WeightEMA
from components.training.inputs import StageInputs, TrainStream, make_train_stream
from components.training.optim import make_optimizer, make_scheduler
from components.training.session import Strategy, TrainSession, distribute, gathered, scratch_folder, unwrap
from components.training.state import load_train_state, save_train_state
from components.training.step import train_step
from model.config import ModelConfig
from model.losses import LossWeights
from model.vla import VLAModel
from model.vocab import load_text_tokenizer
from model.vq import load_vq


@dataclass(frozen=True)
class TrainJob:
    """Everything a worker needs; picklable (Ray sends it to every worker)."""

    # "pretrain" or "tune": names metrics, checkpoints and progress
    stage: str
    train: TrainConfig
    model: ModelConfig
    seed: int
    inputs: StageInputs
    strategy: Strategy
    # MLflow run (rank 0 logs into it) or NULL_LOGGER
    log: MetricLogger


def loss_weights(cfg: TrainConfig) -> LossWeights:
    """λ of the stage's terms (a term with λ = 0 is not computed and its data is not loaded)."""
    return LossWeights(mmu=cfg.lambda_mmu, pre=cfg.lambda_pre, act=cfg.lambda_act)


def freeze_unused(model: VLAModel, job: TrainJob) -> list[str]:
    """Freeze the modules this stage's terms never reach; returns their names.

    The MAP head and the proprioception encoder without L_ACT (stage 1); the vision tower and projector
    without MMU data and without the L' prompt (no_mmu, phi_no_mmu). Frozen, they stay out of the optimiser
    (no moments, no weight decay, nothing to restore) and every remaining parameter gets a gradient every
    step, so DDP needs no search for unused parameters.
    """
    weights = loss_weights(job.train)
    frozen = []
    if weights.act == 0:
        frozen += [name for name in ("action_head", "proprio") if getattr(model, name) is not None]
    if weights.mmu == 0 and not job.train.mmu_condition:
        frozen += ["vision", "projector"]
    for name in frozen:
        getattr(model, name).requires_grad_(False)
    return frozen


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (every rank uses the same seed, so FSDP shards one initialisation)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_start_model(job: TrainJob) -> VLAModel:
    """The weights training starts from: a previous stage's model folder, or the initial backbone."""
    init = job.inputs.init_model
    if init is None:
        vq = load_vq(job.inputs.vq_dir)
        text = load_text_tokenizer(job.inputs.text_tokenizer_dir, job.model.text_vocab_size)
        return VLAModel.build(job.model, vq=vq, text_tokenizer=text)
    model = VLAModel.from_pretrained(init)
    if model.cfg != job.model:
        diff = [k for k in vars(job.model) if getattr(job.model, k) != getattr(model.cfg, k)]
        raise ValueError(f"model.{diff[0]}: {getattr(job.model, diff[0])!r} in the config, but the starting "
                         f"checkpoint {init} was trained with {getattr(model.cfg, diff[0])!r}")
    return model


def set_action_stats(job: TrainJob, session: TrainSession, model: VLAModel, stream: TrainStream) -> None:
    """Standardise the pose by this stage's robot data (`model.normalize_actions`, MAP head, λ_ACT > 0).

    Every rank computes the same statistics from the whole dataset; a resumed run then restores the
    checkpoint's (identical) values with the weights. Logged as `<stage>/action_mean_i`, `action_std_i`.
    """
    if not (job.model.normalize_actions and job.model.action_head == "map" and loss_weights(job.train).act > 0):
        return
    mean, std = stream.batches.pose_stats()
    model.set_action_stats(torch.from_numpy(mean), torch.from_numpy(std))
    if session.rank == 0:
        job.log.log_params({f"{job.stage}/action_{name}_{i}": round(float(v), 5)
                            for name, values in (("mean", mean), ("std", std)) for i, v in enumerate(values)})


def log_epoch_sizes(job: TrainJob, session: TrainSession, stream: TrainStream) -> None:
    """Log each robot source's samples per epoch (`task_repeats` included) as `<stage>/epoch_samples_<source>`."""
    loader = stream.batches.loaders.get("robot")
    if loader is None or session.rank != 0:
        return
    sizes = {source: len(ds) for source, ds in zip(job.train.robot_mix, loader.dataset.datasets, strict=True)}
    job.log.log_params({f"{job.stage}/epoch_samples_{source}": n for source, n in sizes.items()})
    print(f"{job.stage}: robot samples per epoch {sizes}"
          + (f" (task_repeats {job.train.task_repeats})" if job.train.task_repeats else ""), flush=True)


def set_proprio_stats(job: TrainJob, session: TrainSession, model: VLAModel, stream: TrainStream) -> None:
    """Standardise the proprioception features by this stage's robot data (`model.proprio`, λ_ACT > 0).

    As for the pose: every rank computes the same values, a resume restores them with the weights.
    Logged as `<stage>/proprio_mean_i`, `proprio_std_i`.
    """
    if not (job.model.proprio and loss_weights(job.train).act > 0):
        return
    mean, std = stream.batches.proprio_stats()
    model.set_proprio_stats(torch.from_numpy(mean), torch.from_numpy(std))
    if session.rank == 0:
        job.log.log_params({f"{job.stage}/proprio_{name}_{i}": round(float(v), 5)
                            for name, values in (("mean", mean), ("std", std)) for i, v in enumerate(values)})


def meta_copy(model: VLAModel) -> VLAModel:
    """A weightless `VLAModel` of the same config and tokenizer: checkpoints assign gathered weights to it."""
    with torch.device("meta"):
        plain = VLAModel(model.cfg, eos_id=model.layout.eos_id)
    plain.text_tokenizer = model.text_tokenizer
    return plain


class MetricWindow:
    """Sums of per-step metrics since the last log, reduced over ranks when read."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps, self.samples, self.start = 0, 0, time.perf_counter()

    def add(self, metrics: dict[str, Any], samples: int) -> None:
        """Accumulate one step (tensors stay on device: no synchronisation per step)."""
        for key, value in metrics.items():
            value = torch.as_tensor(value, dtype=torch.float32).detach()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.steps += 1
        self.samples += samples

    def read(self) -> dict[str, float]:
        """Window means (over steps and ranks) and samples/s (all ranks); resets the window."""
        keys = sorted(self.sums)
        values = torch.stack([self.sums[k].float().cpu() for k in keys] + [torch.tensor(float(self.samples))])
        if dist.is_initialized():
            dist.all_reduce(values)  # gloo and NCCL both sum; the count of ranks divides below
        world = dist.get_world_size() if dist.is_initialized() else 1
        elapsed = time.perf_counter() - self.start
        out = {k: v / (self.steps * world) for k, v in zip(keys, values[:-1].tolist(), strict=True)}
        out["samples_per_s"] = values[-1].item() / max(elapsed, 1e-9)
        self.__init__()
        return out


def checkpoint_and_report(job: TrainJob, session: TrainSession, wrapped: torch.nn.Module, optimizer, scheduler,
                          stream: TrainStream, plain: VLAModel, step: int, metrics: dict[str, Any],
                          ema: WeightEMA | None) -> None:
    """Write a full-state checkpoint (rank 0) and report it with `metrics`; a collective."""
    with scratch_folder() as folder:
        written = save_train_state(folder, unwrap(wrapped), optimizer, scheduler, step=step,
                                   data_position=stream.state_dict(), plain_model=plain, ema=ema)
        session.report({**metrics, "step": step}, written, step)


def log_preview(job: TrainJob, session: TrainSession, wrapped: torch.nn.Module, stream: TrainStream,
                step: int) -> None:
    """Log a predicted-vs-true future-frame grid (all ranks enter: FSDP gathers; rank 0 logs)."""
    batch = stream.preview_batch()
    if batch is None or loss_weights(job.train).pre == 0:
        return  # future frames are neither loaded nor learned without L_PRE
    with gathered(wrapped) as model:
        model.eval()
        grid = prediction_grid(model, batch.to(session.device), bf16=job.train.bf16, stage=job.stage, step=step)
        model.train()
    if session.rank == 0:
        job.log.log_image(grid, f"frames/{job.stage}_step_{step:06d}.png")


def train_worker(job: TrainJob, session: TrainSession) -> None:
    """Train `job` to `job.train.steps` optimiser steps, resuming from the session's newest checkpoint."""
    cfg, device = job.train, session.device
    seed_everything(job.seed)
    model = build_start_model(job)
    if cfg.grad_checkpointing:
        model.enable_gradient_checkpointing()
    stream = make_train_stream(job.train, job.model, job.inputs, model.text_tokenizer, seed=job.seed,
                               rank=session.rank, world_size=session.world_size)
    log_epoch_sizes(job, session, stream)
    set_action_stats(job, session, model, stream)
    set_proprio_stats(job, session, model, stream)
    plain = meta_copy(model)
    freeze_unused(model, job)
    wrapped = distribute(model.to(device).train(), job.strategy, device)
    optimizer = make_optimizer(unwrap(wrapped), cfg.lr, cfg.weight_decay)  # after sharding: FSDP2 swaps params
    scheduler = make_scheduler(optimizer, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)
    ema = WeightEMA(unwrap(wrapped), cfg.ema_decay) if cfg.ema_decay > 0 else None
    start = 0
    with session.latest_checkpoint() as folder:
        if folder is not None:
            restored = load_train_state(folder, unwrap(wrapped), optimizer, scheduler, ema=ema)
            stream.load_state_dict(restored.data_position)
            start = restored.step
    weights = loss_weights(cfg)
    per_step = (cfg.batch_size + cfg.mmu_batch_size) * cfg.grad_accum
    window, last = MetricWindow(), {"resumed_from_step": start}
    bar = tqdm(total=cfg.steps, initial=start, desc=job.stage, mininterval=5.0, disable=session.rank != 0)
    guard = ThreadGuard(name=f"{job.stage} rank {session.rank}")  # fewer threads while others take the cores
    for step in range(start + 1, cfg.steps + 1):
        guard.tick()
        micro = [corrupt_codes(stream.next_batch(), cfg.code_noise, codebook_size=job.model.vq.codebook_size,
                               generator=noise_generator(job.seed, session.rank, step, i)).to(device)
                 for i in range(cfg.grad_accum)]
        window.add(train_step(wrapped, optimizer, scheduler, micro, weights, bf16=cfg.bf16, clip=cfg.clip_grad_norm),
                   per_step)
        if ema is not None:
            ema.update(step - 1)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            last = {**window.read(), "resumed_from_step": start, "torch_threads": guard.threads}
            bar.set_postfix(loss=f"{last['loss']:.3f}", refresh=False)
            if session.rank == 0:
                job.log.log_metrics({f"{job.stage}/{k}": v for k, v in last.items()}, step=step)
        if step % cfg.image_every == 0 or step == cfg.steps:
            log_preview(job, session, wrapped, stream, step)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint_and_report(job, session, wrapped, optimizer, scheduler, stream, plain, step, last, ema)
    bar.close()
    if start >= cfg.steps:  # restored at the end (a re-run of a finished job): hand the final state back
        checkpoint_and_report(job, session, wrapped, optimizer, scheduler, stream, plain, cfg.steps, last, ema)

"""One optimiser step: accumulation equals a bigger batch, clipping bounds the update, DDP and FSDP2 agree.

The DDP/FSDP2 test runs 2 real gloo ranks on CPU (torch.multiprocessing), the same code Ray Train runs.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from components.training.optim import make_optimizer, make_scheduler
from components.training.session import distribute, unwrap
from components.training.state import load_train_state, save_train_state
from components.training.step import train_step
from model.batches import TrainBatch
from model.losses import LossWeights
from model.vla import VLAModel
from tests.model.conftest import TINY, mmu_batch, robot_batch

ROBOT_ONLY = LossWeights(mmu=0.0, pre=1.0, act=1.0)


def setup(seed: int = 0):
    torch.manual_seed(seed)
    model = VLAModel(TINY)
    opt = make_optimizer(model, lr=1e-2, weight_decay=0.01)
    return model, opt, make_scheduler(opt, steps=5, warmup_steps=0, min_lr_ratio=0.1)


def split(batch: TrainBatch, at: int) -> list[TrainBatch]:
    robot = batch.robot
    halves = []
    for part in (slice(0, at), slice(at, None)):
        fields = {f.name: getattr(robot, f.name) for f in dataclasses.fields(robot)}
        halves.append(TrainBatch(type(robot)(**{k: None if v is None else v[part] for k, v in fields.items()})))
    return halves


def test_two_accumulated_micro_batches_equal_one_batch_of_both():
    whole = TrainBatch(robot_batch(TINY, 4, seed=1))
    a = setup()
    b = setup()
    ma = train_step(*a, [whole], ROBOT_ONLY, bf16=False, clip=0.0)
    mb = train_step(*b, split(whole, 2), ROBOT_ONLY, bf16=False, clip=0.0)
    torch.testing.assert_close(ma["grad_norm"], mb["grad_norm"], rtol=1e-4, atol=1e-6)
    # gradients, not weights: Adam turns float noise on zero-gradient parameters (key biases) into full steps
    for (name, p), q in zip(a[0].named_parameters(), b[0].parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_clipping_bounds_the_gradient_and_reports_the_norm_before_it():
    model, opt, sched = setup()
    metrics = train_step(model, opt, sched, [TrainBatch(robot_batch(TINY, 2))], ROBOT_ONLY, bf16=True, clip=0.01)
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert metrics["grad_norm"] > 0.01 and after == pytest.approx(0.01, rel=1e-3)
    assert metrics["lr"] == pytest.approx(1e-2) and torch.isfinite(metrics["loss"])
    assert set(metrics) >= {"loss", "pre", "act", "act_pose_mse", "act_gripper_bce", "grad_norm", "lr"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, strategy: str, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model, _, _ = setup()
    with torch.device("meta"):
        plain = VLAModel(TINY)
    wrapped = distribute(model, strategy, torch.device("cpu"))
    opt = make_optimizer(unwrap(wrapped), lr=1e-2, weight_decay=0.01)
    sched = make_scheduler(opt, steps=5, warmup_steps=1, min_lr_ratio=0.1)
    weights = LossWeights(mmu=0.1, pre=1.0, act=1.0)
    for s in range(2):  # each rank its own samples: the update uses the mean gradient over ranks
        batch = TrainBatch(robot_batch(TINY, 2, conditioned=True, seed=10 * s + rank), mmu_batch(TINY, 2, seed=s))
        train_step(wrapped, opt, sched, [batch], weights, bf16=False, clip=1.0)
    save_train_state(folder, unwrap(wrapped), opt, sched, step=2, data_position={}, plain_model=plain)
    dist.barrier()
    load_train_state(folder, unwrap(wrapped), opt, sched)  # every rank reads the full state back into its shard
    dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp2_and_ddp_take_the_same_steps_on_two_gloo_ranks(tmp_path):
    """~30 s on an idle 2-core machine (two spawned pairs of ranks importing torch + transformers)."""
    for strategy in ("ddp", "fsdp"):
        mp.spawn(_rank_main, args=(2, _free_port(), strategy, str(tmp_path / strategy)), nprocs=2)
    for name in ("model/model.safetensors", "optimizer.safetensors"):
        ddp, fsdp = load_file(str(tmp_path / "ddp" / name)), load_file(str(tmp_path / "fsdp" / name))
        assert ddp.keys() == fsdp.keys()
        for key in ddp:
            torch.testing.assert_close(ddp[key], fsdp[key], rtol=1e-5, atol=1e-6, msg=key)

"""Corrupting the current frame's codes for training (`<stage>.code_noise`)."""

from __future__ import annotations

import pytest
import torch

from components.core.config import load_config
from components.training.augment import corrupt_codes, noise_generator
from model.batches import MMUBatch, RobotBatch, TrainBatch


def robot_batch(rows: int = 64, codes: int = 128) -> TrainBatch:
    current = torch.arange(rows * codes).reshape(rows, codes) % 1024
    return TrainBatch(
        RobotBatch(instruction_ids=torch.ones(rows, 5, dtype=torch.long), current_codes=current,
                   future_codes=current.flip(1), actions=torch.zeros(rows, 10, 7),
                   action_mask=torch.ones(rows, 10, dtype=torch.bool)),
        MMUBatch(pixel_values=torch.zeros(2, 3, 8, 8), input_ids=torch.ones(2, 4, dtype=torch.long),
                 labels=torch.ones(2, 4, dtype=torch.long)))


def test_about_the_asked_fraction_of_input_codes_changes_and_nothing_else():
    batch = robot_batch()
    noisy = corrupt_codes(batch, 0.25, codebook_size=1024, generator=noise_generator(0, 0, 1, 0))
    changed = (noisy.robot.current_codes != batch.robot.current_codes).float().mean().item()
    assert 0.22 < changed < 0.28  # 8192 codes: the binomial spread is about 0.005
    assert noisy.robot.current_codes.dtype == torch.long
    assert 0 <= noisy.robot.current_codes.min() and noisy.robot.current_codes.max() < 1024
    assert noisy.robot.future_codes is batch.robot.future_codes  # targets stay the recorded ones
    assert noisy.robot.actions is batch.robot.actions
    assert noisy.mmu is batch.mmu
    assert torch.equal(batch.robot.current_codes, robot_batch().robot.current_codes)  # the input is not modified


def test_the_draws_depend_only_on_seed_rank_step_and_micro_batch():
    batch = robot_batch()

    def codes(*key: int) -> torch.Tensor:
        return corrupt_codes(batch, 0.25, codebook_size=1024, generator=noise_generator(*key)).robot.current_codes

    assert torch.equal(codes(0, 0, 5, 0), codes(0, 0, 5, 0))
    for other in ((1, 0, 5, 0), (0, 1, 5, 0), (0, 0, 6, 0), (0, 0, 5, 1)):
        assert not torch.equal(codes(0, 0, 5, 0), codes(*other)), other


def test_zero_noise_or_no_robot_samples_leave_the_batch_as_it_is():
    batch = robot_batch()
    assert corrupt_codes(batch, 0.0, codebook_size=1024, generator=noise_generator(0, 0, 1, 0)) is batch
    mmu_only = TrainBatch(None, batch.mmu)
    assert corrupt_codes(mmu_only, 0.5, codebook_size=1024, generator=noise_generator(0, 0, 1, 0)) is mmu_only
    with pytest.raises(ValueError, match="code_noise: must be in"):
        corrupt_codes(batch, 1.0, codebook_size=1024, generator=noise_generator(0, 0, 1, 0))


def test_the_config_refuses_a_fraction_of_one_naming_the_key():
    assert load_config(overrides={"tune.code_noise": 0.1}).tune.code_noise == 0.1
    with pytest.raises(ValueError, match="code_noise"):
        load_config(overrides={"tune.code_noise": 1.0})

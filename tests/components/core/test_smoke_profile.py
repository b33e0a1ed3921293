"""profiles/smoke.yaml, ablation.yaml and fast.yaml: load with every preset, keep the default data, shrink the work."""

from __future__ import annotations

import pytest

from components.core.config import PRESET_NAMES, load_config
from tests.conftest import PROJECT_ROOT

PARAMS = PROJECT_ROOT / "params.yaml"


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_smoke_profile_loads_with_every_preset(preset):
    assert load_config(PARAMS, profile="smoke", preset=preset).experiment.preset == preset


def test_smoke_profile_keeps_the_tokenizers_of_the_default_and_shrinks_the_work():
    default, smoke = load_config(PARAMS), load_config(PARAMS, profile="smoke")
    # data tokenized under params.yaml (the tests' pipeline_data) stays valid under the smoke profile
    assert smoke.model.vq == default.model.vq and smoke.model.text_vocab_size == default.model.text_vocab_size
    assert smoke.model.hidden_size < default.model.hidden_size
    for stage in ("pretrain", "tune"):
        assert getattr(smoke, stage).steps <= 10 and getattr(smoke, stage).num_workers == 1
    assert smoke.evaluate.num_sequences <= 4 and smoke.evaluate.ep_len <= 20
    assert smoke.tokenizer.steps <= 50


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_ablation_profile_loads_with_every_preset_and_the_preset_wins(preset):
    cfg = load_config(PARAMS, profile="ablation", preset=preset)
    preset_cfg = load_config(PARAMS, preset=preset)
    # a preset that drops the VQA data keeps doing so under the profile (the preset is applied after it)
    assert (cfg.tune.mmu_batch_size == 0) == (preset_cfg.tune.mmu_batch_size == 0)
    assert (cfg.pretrain.mmu_batch_size == 0) == (preset_cfg.pretrain.mmu_batch_size == 0)


def test_ablation_profile_shares_the_default_data_and_evaluates_what_table3_needs():
    from components.experiments.ablations import data_key

    default, ablation = load_config(PARAMS), load_config(PARAMS, profile="ablation")
    # `--raw data/raw` and the pipeline's data stages apply unchanged
    assert data_key(ablation) == data_key(default)
    assert ablation.evaluate.num_sequences >= 64 and ablation.evaluate.ep_len == default.evaluate.ep_len
    assert ablation.tune.steps < default.tune.steps and ablation.pretrain.steps < default.pretrain.steps


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_fast_profile_loads_with_every_preset_and_the_preset_wins(preset):
    cfg, preset_cfg = load_config(PARAMS, profile="fast", preset=preset), load_config(PARAMS, preset=preset)
    assert (cfg.tune.mmu_batch_size == 0) == (preset_cfg.tune.mmu_batch_size == 0)
    assert cfg.tune.init_from == preset_cfg.tune.init_from and cfg.model.action_head == preset_cfg.model.action_head


def test_fast_profile_trains_the_default_model_on_the_default_data_in_fewer_steps():
    from components.experiments.ablations import data_key

    default, fast = load_config(PARAMS), load_config(PARAMS, profile="fast")
    assert data_key(fast) == data_key(default)
    assert fast.model == default.model and fast.evaluate == default.evaluate
    for stage in ("pretrain", "tune"):
        assert getattr(fast, stage).steps < getattr(default, stage).steps
        assert getattr(fast, stage).mmu_batch_size == getattr(default, stage).mmu_batch_size

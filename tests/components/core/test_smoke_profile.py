"""profiles/smoke.yaml: loads with every preset, keeps the data-stage shapes of the default, and is small."""

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

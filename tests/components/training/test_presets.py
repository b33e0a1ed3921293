"""Every ablation/baseline preset changes exactly what its name says in the training stages, nothing else.

For each preset and stage, the observable training set-up (loss weights, which fields the data stream
delivers, MMU data, the starting point, the modules left untrained, the action head and the backbone
initialisation) is compared with the `full` preset's; the set of differences must be the expected one.
"""

from __future__ import annotations

import pytest
import torch

from components.core.config import PRESET_NAMES
from components.training.inputs import make_train_stream
from components.training.loop import freeze_unused, loss_weights
from model.vla import VLAModel
from model.vocab import load_text_tokenizer
from tests.fixtures.training import tiny_config, tiny_inputs, tiny_job

ROBOT_FIELDS = ("future_codes", "actions", "scene_pixels", "description_ids")
# preset -> stage -> the set-up entries that differ from `full`
EXPECTED = {
    "full": {"pretrain": set(), "tune": set()},
    "no_mmu": {"pretrain": {"lambda_mmu", "mmu data", "untrained"}, "tune": {"lambda_mmu", "mmu data"}},
    "no_bridge_pretrain": {"pretrain": set(), "tune": {"starts from"}},
    "no_prediction": {"pretrain": {"lambda_pre", "robot data"}, "tune": {"lambda_pre", "robot data"}},
    "no_mmu_condition": {"pretrain": set(), "tune": {"robot data", "prompt"}},
    "rt2": {"pretrain": {"lambda_pre", "robot data", "action head", "untrained"},
            "tune": {"lambda_pre", "robot data", "prompt", "action head"}},
    "phi_no_mmu": {"pretrain": {"lambda_mmu", "mmu data", "untrained", "backbone init"},
                   "tune": {"lambda_mmu", "mmu data", "robot data", "prompt", "untrained", "backbone init"}},
}


def setup_of(data, tokenizer, preset: str, stage: str) -> dict:
    cfg = tiny_config(stage, steps=2, preset=preset)
    train = getattr(cfg, stage)
    weights = loss_weights(train)
    batch = make_train_stream(train, cfg.model, tiny_inputs(data, None), tokenizer, seed=0, rank=0,
                              world_size=1).next_batch()
    torch.manual_seed(0)
    model = VLAModel(cfg.model)
    robot = None if batch.robot is None else tuple(f for f in ROBOT_FIELDS if getattr(batch.robot, f) is not None)
    return {"lambda_mmu": weights.mmu, "lambda_pre": weights.pre, "lambda_act": weights.act,
            "robot data": robot, "mmu data": batch.mmu is not None, "prompt": train.mmu_condition,
            "starts from": train.init_from, "untrained": tuple(freeze_unused(model, tiny_job(cfg, stage, None))),
            "action head": cfg.model.action_head, "backbone init": cfg.model.backbone_init}


@pytest.fixture(scope="module")
def setups(pipeline_data):
    tokenizer = load_text_tokenizer(pipeline_data.text_dir, tiny_config("tune", 2).model.text_vocab_size)
    return {(preset, stage): setup_of(pipeline_data, tokenizer, preset, stage)
            for preset in PRESET_NAMES for stage in ("pretrain", "tune")}


def test_the_full_model_trains_what_the_paper_trains(setups):
    stage1, stage2 = setups["full", "pretrain"], setups["full", "tune"]
    assert (stage1["lambda_mmu"], stage1["lambda_pre"], stage1["lambda_act"]) == (0.1, 1.0, 0.0)
    assert (stage2["lambda_mmu"], stage2["lambda_pre"], stage2["lambda_act"]) == (0.1, 1.0, 1.0)
    assert stage1["robot data"] == ("future_codes",) and stage1["untrained"] == ("action_head",)
    assert stage2["robot data"] == ROBOT_FIELDS and stage2["untrained"] == () and stage2["starts from"] == "pretrain"


@pytest.mark.parametrize("preset", [p for p in PRESET_NAMES if p != "full"])
@pytest.mark.parametrize("stage", ["pretrain", "tune"])
def test_a_preset_changes_exactly_what_it_names(setups, preset, stage):
    full, changed = setups["full", stage], setups[preset, stage]
    assert {key for key in full if full[key] != changed[key]} == EXPECTED[preset][stage]


def test_the_ablations_remove_what_they_name(setups):
    assert setups["no_prediction", "tune"]["robot data"] == ("actions", "scene_pixels", "description_ids")
    assert setups["no_prediction", "pretrain"]["robot data"] is None  # stage 1 has nothing left but VQA
    assert setups["no_mmu_condition", "tune"]["robot data"] == ("future_codes", "actions")
    assert setups["no_bridge_pretrain", "tune"]["starts from"] == "backbone"
    assert setups["rt2", "tune"]["action head"] == "tokens" and setups["phi_no_mmu", "tune"]["backbone init"] == "llm"
    assert setups["phi_no_mmu", "pretrain"]["untrained"] == ("action_head", "vision", "projector")

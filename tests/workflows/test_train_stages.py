"""The DVC wiring of the training stages: stage 2 starts from stage 1's model, every dependency is declared."""

from __future__ import annotations

import yaml

from tests.conftest import PROJECT_ROOT


def test_dvc_stages_chain_pretrain_into_tune_with_their_params_and_outputs():
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    pretrain_stage, tune_stage = stages["pretrain"], stages["tune"]
    assert pretrain_stage["cmd"] == "python -m workflows.pretrain" and tune_stage["cmd"] == "python -m workflows.tune"
    assert "artifacts/pretrain/model" in pretrain_stage["outs"] and "artifacts/tune/model" in tune_stage["outs"]
    assert "artifacts/pretrain/model" in tune_stage["deps"]  # stage 2 starts from stage 1's output, explicitly
    for stage, name in ((pretrain_stage, "pretrain"), (tune_stage, "tune")):
        assert {name, "model", "experiment", "presets"} <= set(stage["params"])
        code = {"components/training", "model", f"workflows/{name}.py"}  # the whole closure: test_stage_deps
        assert {"data/tokens", "data/ingested", *code} <= set(stage["deps"])
        assert [{f"metrics/{name}.json": {"cache": False}}] == stage["metrics"]

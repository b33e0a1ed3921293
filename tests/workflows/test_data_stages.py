"""The data stages' entry points and DVC wiring: each `main()` runs on fixture data, writes its outputs and
its DVC metrics file, and logs an MLflow run; dvc.yaml declares their code, params and outputs."""

from __future__ import annotations

import json

import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT_ROOT


def test_dvc_stages_declare_code_params_and_outputs():
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    ingest, tokenizer, pretokenize = stages["ingest"], stages["tokenizer"], stages["pretokenize"]
    assert "data/raw" in ingest["deps"]  # the code deps: tests/test_stage_deps.py
    assert ingest["outs"] == ["data/ingested"] and ingest["params"] == ["ingest"]
    assert "data/ingested" in tokenizer["deps"]
    assert tokenizer["outs"] == ["artifacts/vq", "artifacts/text_tokenizer"]
    assert {"tokenizer", "model.vq", "model.text_vocab_size"} <= set(tokenizer["params"])
    assert {"pretokenize", "model.vq", "model.num_views", "model.vision_image_size"} <= set(pretokenize["params"])
    assert {"data/ingested", "artifacts/vq"} <= set(pretokenize["deps"])
    assert pretokenize["outs"] == [{"data/tokens": {"persist": True}}]  # finished shards survive a failed run
    for name, stage in (("ingest", ingest), ("tokenizer", tokenizer), ("pretokenize", pretokenize)):
        assert stage["cmd"] == f"python -m workflows.{name}"
        assert stage["metrics"] == [{f"metrics/{name}.json": {"cache": False}}]


def test_mains_run_the_stages_and_log_them(pipeline_data, tmp_path, monkeypatch):
    from workflows import ingest, pretokenize, tokenizer

    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    common = ["--set", f"tracking.artifacts={tmp_path / 'mlartifacts'}"]
    metrics, ingested, artifacts = tmp_path / "metrics", tmp_path / "ingested", tmp_path / "artifacts"
    assert ingest.main([*common, "--raw", str(pipeline_data.raw), "--out", str(ingested),
                        "--metrics", str(metrics / "ingest.json")]) == 0
    assert json.loads((metrics / "ingest.json").read_text())["frames"] == 82
    assert tokenizer.main([*common, "--set", "tokenizer.steps=2", "--set", "tokenizer.eval_frames=4",
                           "--ingested", str(ingested), "--out", str(artifacts),
                           "--metrics", str(metrics / "tokenizer.json")]) == 0
    assert json.loads((metrics / "tokenizer.json").read_text())["fitted"] is True
    assert pretokenize.main([*common, "--vq", str(artifacts / "vq"), "--ingested", str(ingested),
                          "--out", str(tmp_path / "tokens"), "--metrics", str(metrics / "pretokenize.json")]) == 0
    assert json.loads((metrics / "pretokenize.json").read_text())["frames"] == 82
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("upvla-pipeline").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["ingest-full-s0", "pretokenize-full-s0", "tokenizer-full-s0"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert [a.path for a in client.list_artifacts(runs[-1].info.run_id, "ingest")] == [
        "ingest/quarantine.json", "ingest/quarantine.txt"]

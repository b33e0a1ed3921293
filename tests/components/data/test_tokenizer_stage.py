"""The tokenizer stage: fitting logs held-out PSNR and a reconstruction grid to MLflow, a pretrained folder is
loaded (and checked against model.vq), and the text tokenizer covers the ingested texts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import components.data.tokenizer as tokenizer_stage
from components.core.tracking import start_run
from components.data.tables import read_table
from components.data.tokenizer import corpus, image_grid, prepare_tokenizers, select_rows
from model.vocab import load_text_tokenizer
from model.vq_tokenizer import VQTokenizer
from tests.fixtures.pictures import has_text, label_bands


def test_fitting_logs_psnr_and_the_reconstruction_grid(pipeline_data, tracking_target, tmp_path):
    cfg = dataclasses.replace(pipeline_data.cfg.tokenizer, steps=2, log_every=1)
    with start_run(tracking_target, "test-tokenizer", "tokenizer") as run:
        summary = prepare_tokenizers(cfg, pipeline_data.cfg.model, pipeline_data.ingested, tmp_path, seed=0, log=run)
    client = MlflowClient(tracking_target.uri)
    history = client.get_metric_history(run.run_id, "vq/psnr_db")
    assert [m.step for m in history] == [1, 2] and history[-1].value > 0
    artifacts = [a.path for a in client.list_artifacts(run.run_id, "tokenizer")]
    assert artifacts == ["tokenizer/reconstructions.png"]
    # every frame but the held-out ones, and (num_views = 2) the gripper view of those that have one
    fit_rows, _ = select_rows(82, cfg.max_frames, cfg.eval_frames)
    gripper = read_table(pipeline_data.ingested / "frames", columns=["rgb_gripper"]).column("rgb_gripper")
    with_gripper = sum(gripper[int(r)].is_valid for r in fit_rows)
    assert summary.fitted and summary.frames_fitted == 82 - 8 + with_gripper and 0 < with_gripper < 82 - 8
    tok = VQTokenizer.from_pretrained(tmp_path / "vq")
    assert tok.cfg == pipeline_data.cfg.model.vq


def test_a_pretrained_folder_is_loaded_not_fitted(pipeline_data, tmp_path):
    cfg = dataclasses.replace(pipeline_data.cfg.tokenizer, pretrained=str(pipeline_data.vq_dir),
                              text_pretrained=str(pipeline_data.text_dir))
    summary = prepare_tokenizers(cfg, pipeline_data.cfg.model, pipeline_data.ingested, tmp_path, seed=0)
    assert not summary.fitted and summary.frames_fitted == 0
    assert summary.psnr_db == pytest.approx(pipeline_data.tokenizer.psnr_db)
    assert (tmp_path / "vq" / "vq.safetensors").read_bytes() == (pipeline_data.vq_dir / "vq.safetensors").read_bytes()
    other = dataclasses.replace(pipeline_data.cfg.model, vq=dataclasses.replace(pipeline_data.cfg.model.vq,
                                                                                codebook_bits=8))
    with pytest.raises(ValueError, match="tokenizer.pretrained: .* model.vq"):
        prepare_tokenizers(cfg, other, pipeline_data.ingested, tmp_path / "x", seed=0)


def test_text_tokenizer_has_the_model_vocabulary_and_reads_the_corpus(pipeline_data):
    tok = load_text_tokenizer(pipeline_data.text_dir, pipeline_data.cfg.model.text_vocab_size)
    texts = corpus(pipeline_data.ingested)
    assert {"please open drawer", " Near the top.", " USER: Where is it? ASSISTANT:"} <= set(texts)
    for text in texts:
        assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text


def test_held_out_rows_are_disjoint_and_evenly_spread():
    fit, held = select_rows(100, 30, 10)
    assert len(held) == 10 and len(fit) == 30 and not set(fit) & set(held)
    assert held[0] == 0 and held[-1] == 99
    with pytest.raises(ValueError, match="nothing to fit"):
        select_rows(4, 10, 10)


def test_the_reconstruction_grid_is_titled_and_labels_its_rows_and_columns(monkeypatch):
    images, recon = torch.rand(10, 3, 16, 16) * 2 - 1, torch.rand(10, 3, 16, 16) * 2 - 1
    picture = image_grid(images, recon, count=4, steps=2000, psnr_db=24.31)
    header, left, grid = label_bands(picture, (2 * 16, 4 * 16, 3))
    expected = ((images[2].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(grid[:16, 32:48], expected)  # original 2, top row
    assert has_text(header) and has_text(left[:16]) and has_text(left[16:])
    seen = {}
    monkeypatch.setattr(tokenizer_stage, "label_grid", lambda grid, **labels: seen.update(labels) or grid)
    image_grid(images, recon, count=4, steps=2000, psnr_db=24.31)
    assert "after 2000 fitting steps" in seen["title"] and "PSNR 24.3 dB" in seen["title"]
    assert [t for _, t in seen["columns"]] == [f"held-out {i}" for i in range(4)]
    assert [t for _, t in seen["rows"]] == ["original", "reconstructed"]
    image_grid(images, recon, steps=0)
    assert "pretrained" in seen["title"] and len(seen["columns"]) == 8

"""Checkpoint folders: save/load round trips, loading transformers Phi and CLIP folders, paper-scale build.

The Phi and CLIP folders are small random checkpoints written by transformers itself, in the format
of Phi-1.5 / clip-vit-large-patch14-336, so the loading code is exercised without any download.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, PhiConfig, PhiForCausalLM

from components.config import load_config
from model.batches import TrainBatch
from model.losses import LossWeights
from model.vla import VLAModel
from model.vocab import build_text_tokenizer
from tests.model.conftest import mmu_batch, robot_batch, tiny

WEIGHTS = LossWeights(mmu=0.1, pre=1.0, act=1.0)


@pytest.mark.parametrize("action_head", ["map", "tokens"])
def test_save_load_gives_identical_outputs(tmp_path, action_head):
    torch.manual_seed(0)
    cfg = tiny(action_head=action_head)
    tokenizer = build_text_tokenizer(["open the drawer", "push the red block left"], cfg.text_vocab_size)
    model = VLAModel.build(cfg, text_tokenizer=tokenizer).eval()
    model.set_action_stats(torch.linspace(-0.1, 0.1, 6), torch.linspace(0.1, 0.3, 6))
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    loaded = VLAModel.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.cfg == cfg and loaded.layout == model.layout
    assert torch.equal(loaded.action_mean, model.action_mean) and torch.equal(loaded.action_std, model.action_std)
    assert loaded.text_tokenizer("open the drawer")["input_ids"] == tokenizer("open the drawer")["input_ids"]
    batch = TrainBatch(robot_batch(cfg, conditioned=True), mmu_batch(cfg))
    torch.testing.assert_close(loaded(batch, WEIGHTS)[0], model(batch, WEIGHTS)[0], rtol=0, atol=0)
    a, b = model.predict(batch.robot, bf16=False), loaded.predict(batch.robot, bf16=False)
    assert torch.equal(a.actions, b.actions) and torch.equal(a.future_codes, b.future_codes)


def test_loading_a_broken_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        VLAModel.from_pretrained(tmp_path)
    VLAModel(tiny()).save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**meta, "format": "pickle"}))
    with pytest.raises(ValueError, match="not a upvla v1 checkpoint"):
        VLAModel.from_pretrained(tmp_path)


def write_phi(folder, cfg, vocab_size):
    torch.manual_seed(1)
    phi = PhiForCausalLM(PhiConfig(vocab_size=vocab_size, hidden_size=cfg.hidden_size,
                                   intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
                                   num_attention_heads=cfg.num_heads, partial_rotary_factor=cfg.partial_rotary_factor,
                                   max_position_embeddings=cfg.max_position_embeddings))
    phi.save_pretrained(folder)
    return phi.eval()


def test_llm_checkpoint_keeps_text_rows_and_computes_the_same_function(tmp_path):
    cfg = tiny(backbone_init="llm", llm_path=str(tmp_path / "phi"))
    # like Phi-1.5: more embedding rows (51200) than tokenizer ids (50295)
    source = write_phi(tmp_path / "phi", cfg, vocab_size=cfg.text_vocab_size + 20)
    model = VLAModel.build(cfg).eval()
    layout, embed = model.layout, model.backbone.model.embed_tokens.weight
    assert embed.shape[0] == layout.vocab_size
    text = slice(0, cfg.text_vocab_size)
    torch.testing.assert_close(embed[text], source.model.embed_tokens.weight[text])
    torch.testing.assert_close(embed[layout.pad_id:], embed[text].mean(0).expand(layout.vocab_size - layout.pad_id, -1))
    ids = torch.randint(0, cfg.text_vocab_size, (2, 9))
    with torch.no_grad():
        ours = model.backbone(input_ids=ids).logits[..., text]
        theirs = source(input_ids=ids).logits[..., text]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)  # gelu_new vs fused tanh GELU: ~1e-7


def test_unified_checkpoint_keeps_special_and_code_rows(tmp_path):
    cfg = tiny(backbone_path=str(tmp_path / "showo"))
    layout = VLAModel(cfg).layout
    source = write_phi(tmp_path / "showo", cfg, vocab_size=layout.bin_offset)  # Show-o: text + specials + codes
    head = VLAModel.build(cfg).backbone.lm_head
    torch.testing.assert_close(head.weight[: layout.bin_offset], source.lm_head.weight)
    torch.testing.assert_close(head.bias[layout.bin_slice], source.lm_head.bias[: cfg.text_vocab_size].mean().expand(
        cfg.action_bins))


def test_checkpoint_with_other_sizes_names_the_key(tmp_path):
    cfg = tiny(llm_path=str(tmp_path / "phi"), backbone_init="llm")
    write_phi(tmp_path / "phi", dataclasses.replace(cfg, intermediate_size=96), vocab_size=cfg.text_vocab_size)
    with pytest.raises(ValueError, match=r"model.intermediate_size: 128, but the checkpoint .* has 96"):
        VLAModel.build(cfg)
    with pytest.raises(FileNotFoundError, match="model.vision_path"):
        VLAModel.build(tiny(vision_path=str(tmp_path / "nothing")))


@pytest.mark.parametrize("feature_layer", [-1, -2])
def test_clip_checkpoint_gives_the_chosen_layer_features(tmp_path, feature_layer):
    cfg = tiny(vision_path=str(tmp_path / "clip"), vision_feature_layer=feature_layer, freeze_vision=True)
    torch.manual_seed(2)
    source = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=cfg.vision_hidden_size, intermediate_size=4 * cfg.vision_hidden_size,
        num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
        image_size=cfg.vision_image_size, patch_size=cfg.vision_patch_size)).eval()
    source.save_pretrained(tmp_path / "clip")
    model = VLAModel.build(cfg).eval()
    assert not any(p.requires_grad for p in model.vision.parameters())
    pixels = torch.randn(2, 3, cfg.vision_image_size, cfg.vision_image_size)
    with torch.no_grad():
        expected = source(pixel_values=pixels, output_hidden_states=True).hidden_states[feature_layer][:, 1:]
        got = model.vision(pixel_values=pixels).last_hidden_state[:, 1:]
    torch.testing.assert_close(got, expected)


def test_paper_profile_builds_on_meta_with_phi_1_5_scale():
    cfg = load_config(profile="paper").model
    with torch.device("meta"):
        model = VLAModel(cfg)
    count = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    # Phi-1.5 ("1.3B"; 1.42B with its 51200-row vocabulary), here resized to 58754 rows
    assert 1.3e9 <= count["backbone"] <= 1.5e9
    assert model.layout.vocab_size == 58754 and model.layout.code_offset == 50305
    assert 60e6 <= count["action_head"] <= 80e6  # the reference MAP block: about 71M
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 1.4e9 <= trainable <= 1.6e9  # backbone + projector + MAP head; CLIP and the VQ are frozen
    assert all(p.device.type == "meta" for p in model.parameters())

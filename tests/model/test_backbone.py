"""The Phi backbone (model/backbone.py): Show-o's query/key LayerNorm switch and the checks on a Phi folder.

The Phi folders are tiny random checkpoints written by transformers itself (`save_pretrained`), as in
tests/model/test_pretrained.py.
"""

from __future__ import annotations

import pytest
import torch
from transformers import PhiConfig, PhiForCausalLM

from model.backbone import build_phi, load_phi, load_vision_tower
from model.config import ModelConfig
from tests.fixtures.published.clip import write_tiny_clip
from tests.fixtures.published.showo import write_tiny_showo
from tests.model.conftest import tiny


def write_phi(folder, cfg: ModelConfig, *, qk_layernorm: bool) -> PhiForCausalLM:
    torch.manual_seed(0)
    phi = PhiForCausalLM(PhiConfig(
        vocab_size=cfg.text_vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, qk_layernorm=qk_layernorm,
        partial_rotary_factor=cfg.partial_rotary_factor, max_position_embeddings=cfg.max_position_embeddings))
    with torch.no_grad():  # away from their init (ones, zeros), so a norm that is skipped shows in the logits
        for layer in phi.model.layers:
            for norm in (getattr(layer.self_attn, "q_layernorm", None), getattr(layer.self_attn, "k_layernorm", None)):
                if norm is not None:
                    norm.weight.normal_(1.0, 0.3)
                    norm.bias.normal_(0.0, 0.3)
    phi.save_pretrained(folder)
    return phi.eval()


@pytest.mark.parametrize("qk_layernorm", [False, True])
def test_qk_layernorm_adds_a_norm_over_each_head(qk_layernorm):
    cfg = tiny(qk_layernorm=qk_layernorm)
    attn = build_phi(cfg, 400).model.layers[0].self_attn
    names = {name for name, _ in attn.named_parameters() if "layernorm" in name}
    if not qk_layernorm:
        assert names == set()
        return
    assert names == {"q_layernorm.weight", "q_layernorm.bias", "k_layernorm.weight", "k_layernorm.bias"}
    assert attn.q_layernorm.normalized_shape == (cfg.hidden_size // cfg.num_heads,)


def test_a_phi_folder_with_qk_layernorm_loads_and_computes_the_same_function(tmp_path):
    cfg = tiny(qk_layernorm=True, backbone_init="llm")
    source = write_phi(tmp_path / "phi", cfg, qk_layernorm=True)
    ours = load_phi(tmp_path / "phi", cfg, cfg.text_vocab_size + 20, cfg.text_vocab_size).eval()
    ids = torch.randint(0, cfg.text_vocab_size, (2, 9))
    with torch.no_grad():
        got = ours(input_ids=ids).logits[..., : cfg.text_vocab_size]
        torch.testing.assert_close(got, source(input_ids=ids).logits, atol=1e-5, rtol=1e-4)
        ours.model.layers[0].self_attn.q_layernorm.bias.add_(0.5)
        assert (ours(input_ids=ids).logits[..., : cfg.text_vocab_size] - got).abs().max() > 1e-3


@pytest.mark.parametrize("folder_has, cfg_has", [(False, True), (True, False)])
def test_a_phi_folder_must_agree_on_qk_layernorm(tmp_path, folder_has, cfg_has):
    cfg = tiny(qk_layernorm=cfg_has, backbone_init="llm")
    write_phi(tmp_path / "phi", cfg, qk_layernorm=folder_has)
    with pytest.raises(ValueError, match=rf"model.qk_layernorm: {cfg_has}, but the checkpoint .*phi has {folder_has}"):
        load_phi(tmp_path / "phi", cfg, cfg.text_vocab_size, cfg.text_vocab_size)


def test_a_showo_folder_is_not_read_as_a_phi_folder(tmp_path):
    cfg = tiny(qk_layernorm=True, backbone_init="llm")
    write_tiny_showo(tmp_path / "showo", cfg)
    with pytest.raises(ValueError, match=r"showo/config.json: model_type: expected 'phi' .* got None"):
        load_phi(tmp_path / "showo", cfg, 500, cfg.text_vocab_size)


# ----------------------------------------------------------------- CLIP (the published full-CLIPModel folder)


def test_a_full_clip_folder_loads_its_vision_tower_exactly(tmp_path):
    cfg = tiny(vision_feature_layer=-1)
    source = write_tiny_clip(tmp_path / "clip", cfg)
    tower = load_vision_tower(tmp_path / "clip", cfg)
    pixels = torch.randn(2, 3, cfg.vision_image_size, cfg.vision_image_size)
    with torch.no_grad():
        expected = source.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1][:, 1:]
        got = tower(pixel_values=pixels).last_hidden_state[:, 1:]
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(("drop", "extra", "named"), [
    ("vision_model.encoder.layers.0.mlp.fc1.weight", None, "encoder.layers.0.mlp.fc1.weight"),
    (None, "vision_model.surprise", "surprise"),
])
def test_a_clip_folder_with_a_missing_or_unknown_vision_key_is_refused(tmp_path, drop, extra, named):
    cfg = tiny(vision_feature_layer=-1)
    write_tiny_clip(tmp_path / "clip", cfg, drop=drop, extra=extra)
    with pytest.raises(ValueError, match=named) as err:
        load_vision_tower(tmp_path / "clip", cfg)
    assert str(tmp_path / "clip") in str(err.value)

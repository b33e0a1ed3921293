"""Loading the published Show-o folder (model/showo.py) from tiny random folders in its exact layout.

The folders are written by tests/fixtures/published/showo.py from Show-o's documented key list; the expected
outputs come from transformers' own `PhiForCausalLM(qk_layernorm=True)` and from a plain functional Phi
written below from the file's tensors, never from the loader under test.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PhiConfig, PhiForCausalLM

from model.config import ModelConfig
from model.showo import is_showo_folder, load_showo, read_showo_config
from model.vla import VLAModel
from model.vocab import TokenLayout
from tests.fixtures.published.showo import showo_vocab_size, write_tiny_showo
from tests.model.conftest import tiny

CFG = tiny(qk_layernorm=True)
VOCAB = showo_vocab_size(CFG)


def phi_logits(state: dict[str, Tensor], cfg: ModelConfig, ids: Tensor, *, qk_norm: bool = True) -> Tensor:
    """(B, L, vocab) logits of Show-o's Phi computed from the file's tensors: per layer, one input LayerNorm
    feeding attention (q/k LayerNorm over head_dim, then partial rotary) and the tanh-GELU MLP in parallel."""
    w = lambda key: state[f"showo.{key}"]  # noqa: E731
    batch, length = ids.shape
    heads, hidden = cfg.num_heads, cfg.hidden_size
    dim = hidden // heads
    rot = int(dim * cfg.partial_rotary_factor)
    angles = torch.outer(torch.arange(length, dtype=torch.float32),
                         1.0 / 10000 ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot)).repeat(1, 2)

    def rotary(t: Tensor) -> Tensor:
        r, rest = t[..., :rot], t[..., rot:]
        turned = torch.cat([-r[..., rot // 2:], r[..., : rot // 2]], dim=-1)
        return torch.cat([r * angles.cos() + turned * angles.sin(), rest], dim=-1)

    x = w("model.embed_tokens.weight")[ids]
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        h = F.layer_norm(x, (hidden,), w(p + "input_layernorm.weight"), w(p + "input_layernorm.bias"), 1e-5)
        q, k, v = (F.linear(h, w(p + f"self_attn.{n}.weight"), w(p + f"self_attn.{n}.bias"))
                   .view(batch, length, heads, dim).transpose(1, 2) for n in ("q_proj", "k_proj", "v_proj"))
        if qk_norm:
            q = F.layer_norm(q, (dim,), w(p + "self_attn.q_layernorm.weight"), w(p + "self_attn.q_layernorm.bias"))
            k = F.layer_norm(k, (dim,), w(p + "self_attn.k_layernorm.weight"), w(p + "self_attn.k_layernorm.bias"))
        scores = rotary(q) @ rotary(k).transpose(-1, -2) / dim**0.5
        scores = scores.masked_fill(~torch.ones(length, length, dtype=torch.bool).tril(), float("-inf"))
        attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, hidden)
        attn = F.linear(attn, w(p + "self_attn.dense.weight"), w(p + "self_attn.dense.bias"))
        mlp = F.gelu(F.linear(h, w(p + "mlp.fc1.weight"), w(p + "mlp.fc1.bias")), approximate="tanh")
        x = x + attn + F.linear(mlp, w(p + "mlp.fc2.weight"), w(p + "mlp.fc2.bias"))
    x = F.layer_norm(x, (hidden,), w("model.final_layernorm.weight"), w("model.final_layernorm.bias"), 1e-5)
    return F.linear(x, w("lm_head.weight"), w("lm_head.bias"))


def transformers_phi(state: dict[str, Tensor], cfg: ModelConfig) -> PhiForCausalLM:
    """transformers' Phi with Show-o's switch, the file's weights loaded strictly (prefix stripped)."""
    phi = PhiForCausalLM(PhiConfig(
        vocab_size=VOCAB, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, hidden_act="gelu_new",
        partial_rotary_factor=cfg.partial_rotary_factor, tie_word_embeddings=False, qk_layernorm=True,
        attn_implementation="eager"))
    phi.load_state_dict({k.removeprefix("showo."): v for k, v in state.items() if k.startswith("showo.")})
    return phi.eval()


def test_build_loads_every_key_and_appends_only_the_action_rows(tmp_path):
    state = write_tiny_showo(tmp_path / "showo", CFG)
    model = VLAModel.build(tiny(qk_layernorm=True, backbone_path=str(tmp_path / "showo")))
    backbone, projector = model.backbone.state_dict(), model.projector.state_dict()
    assert set(backbone) == {k.removeprefix("showo.") for k in state if k.startswith("showo.")}
    assert set(projector) == {k.removeprefix("mm_projector.") for k in state if k.startswith("mm_projector.")}
    for key, value in state.items():
        if key.startswith("mm_projector."):
            torch.testing.assert_close(projector[key.removeprefix("mm_projector.")], value, rtol=0, atol=0)
        else:
            torch.testing.assert_close(backbone[key.removeprefix("showo.")][: value.shape[0]], value, rtol=0, atol=0)
    layout = model.layout
    assert layout.bin_offset == VOCAB and backbone["lm_head.weight"].shape[0] == layout.vocab_size
    text = slice(0, CFG.text_vocab_size)
    for key in ("model.embed_tokens.weight", "lm_head.weight", "lm_head.bias"):
        mean = state[f"showo.{key}"][text].mean(0)
        torch.testing.assert_close(backbone[key][layout.bin_slice], mean.expand_as(backbone[key][layout.bin_slice]))


def test_loaded_backbone_computes_showo_phi_with_qk_layernorm(tmp_path):
    state = write_tiny_showo(tmp_path / "showo", CFG)
    ours = load_showo(tmp_path / "showo", CFG, TokenLayout.from_config(CFG).vocab_size, VOCAB).backbone.eval()
    ids = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = ours(input_ids=ids).logits[..., :VOCAB]
        reference = transformers_phi(state, CFG)(input_ids=ids).logits
        plain = phi_logits(state, CFG, ids)
        torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-4)  # gelu_new vs fused tanh GELU: ~1e-7
        torch.testing.assert_close(got, plain, atol=1e-5, rtol=1e-4)
        # the norms change the function: without them, or with one perturbed, the logits move
        assert (plain - phi_logits(state, CFG, ids, qk_norm=False)).abs().max() > 0.1
        ours.model.layers[1].self_attn.k_layernorm.weight.mul_(1.5)
        assert (ours(input_ids=ids).logits[..., :VOCAB] - got).abs().max() > 0.01


def test_bin_variant_loads_identically(tmp_path):
    write_tiny_showo(tmp_path / "st", CFG, seed=3)
    write_tiny_showo(tmp_path / "bin", CFG, seed=3, bin=True)
    assert not (tmp_path / "bin" / "pytorch_model.safetensors").exists()
    vocab = TokenLayout.from_config(CFG).vocab_size
    a, b = (load_showo(tmp_path / name, CFG, vocab, VOCAB) for name in ("st", "bin"))
    for key, value in a.backbone.state_dict().items():
        torch.testing.assert_close(b.backbone.state_dict()[key], value, rtol=0, atol=0)
    assert a.projector.keys() == b.projector.keys() == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for key, value in a.projector.items():
        torch.testing.assert_close(b.projector[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("bin", [False, True])
@pytest.mark.parametrize("change", [
    {"drop": ["showo.model.layers.1.self_attn.k_layernorm.bias"]},
    {"drop": ["mm_projector.2.bias"]},
    {"extra": {"showo.model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(4)}},
    {"reshape": {"showo.lm_head.bias": (VOCAB + 1,)}},
    {"reshape": {"showo.model.layers.0.self_attn.q_proj.weight": (64, 32)}},
])
def test_a_missing_extra_or_misshaped_key_is_named_with_the_file(tmp_path, change, bin):
    write_tiny_showo(tmp_path / "showo", CFG, bin=bin, **change)
    name = "pytorch_model.bin" if bin else "pytorch_model.safetensors"
    (key,) = [k for value in change.values() for k in value]
    with pytest.raises(ValueError, match=rf"{re.escape(name)}: .*{re.escape(key)}"):
        load_showo(tmp_path / "showo", CFG, TokenLayout.from_config(CFG).vocab_size, VOCAB)


def test_every_bad_key_is_listed_in_one_error(tmp_path):
    keys = ["showo.model.final_layernorm.bias", "showo.extra.weight", "mm_projector.0.bias"]
    write_tiny_showo(tmp_path / "showo", CFG, drop=keys[:1], extra={keys[1]: torch.zeros(2)},
                     reshape={keys[2]: (3,)})
    with pytest.raises(ValueError) as err:
        VLAModel.build(tiny(qk_layernorm=True, backbone_path=str(tmp_path / "showo")))
    assert "pytorch_model.safetensors" in str(err.value) and all(k in str(err.value) for k in keys)


def test_without_qk_layernorm_a_showo_folder_is_refused(tmp_path):
    write_tiny_showo(tmp_path / "showo", CFG)
    with pytest.raises(ValueError, match=r"model.qk_layernorm: false, but .*showo is a Show-o folder"):
        VLAModel.build(tiny(backbone_path=str(tmp_path / "showo")))


@pytest.mark.parametrize("written, key", [
    ({"num_layers": 3}, "num_layers"),
    ({"hidden_size": 96}, "hidden_size"),
    ({"num_heads": 2}, "num_heads"),
    ({"intermediate_size": 96}, "intermediate_size"),
    ({"vision_hidden_size": 48}, "vision_hidden_size"),
])
def test_a_size_that_differs_from_the_config_names_the_key(tmp_path, written, key):
    write_tiny_showo(tmp_path / "showo", tiny(qk_layernorm=True, **written))
    ours, theirs = getattr(CFG, key), next(iter(written.values()))
    with pytest.raises(ValueError, match=rf"model.{key}: {ours}, but the checkpoint .*pytorch_model.safetensors "
                                         rf"has {theirs}"):
        load_showo(tmp_path / "showo", CFG, TokenLayout.from_config(CFG).vocab_size, VOCAB)


@pytest.mark.parametrize("config, message", [
    ({"llm_vocab_size": 299}, r"model.text_vocab_size: 300, but .*config.json has llm_vocab_size 299"),
    ({"codebook_size": 128}, r"model.vq.codebook_bits: 6 \(64 codes\), but .*config.json has codebook_size 128"),
    ({"vocab_size": VOCAB + 1}, rf"config.json: vocab_size: {VOCAB + 1}, but"),
    ({"mask_token_id": 0}, r"config.json: mask_token_id: 0"),
    ({"w_clip_vit": 1}, r"config.json: missing or mistyped field\(s\): w_clip_vit"),
    ({"num_new_special_tokens": 9}, r"config.json: .*num_new_special_tokens"),
])
def test_a_config_json_that_does_not_fit_names_the_field(tmp_path, config, message):
    write_tiny_showo(tmp_path / "showo", CFG, config=config)
    with pytest.raises(ValueError, match=message):
        load_showo(tmp_path / "showo", CFG, TokenLayout.from_config(CFG).vocab_size, VOCAB)


def test_showo_only_fields_are_read_and_the_projector_is_optional(tmp_path):
    write_tiny_showo(tmp_path / "showo", CFG, w_clip_vit=False,
                     config={"_version": "0.0.1", "num_new_special_tokens": 10})
    assert is_showo_folder(tmp_path / "showo") and not is_showo_folder(tmp_path)
    showo = read_showo_config(tmp_path / "showo")
    assert (showo.vocab_size, showo.mask_token_id, showo.w_clip_vit) == (VOCAB, VOCAB - 1, False)
    assert load_showo(tmp_path / "showo", CFG, TokenLayout.from_config(CFG).vocab_size, VOCAB).projector == {}
    write_tiny_showo(tmp_path / "with_projector", CFG, config={"w_clip_vit": False})
    with pytest.raises(ValueError, match=r"unexpected \['mm_projector.0.bias'"):
        load_showo(tmp_path / "with_projector", CFG, TokenLayout.from_config(CFG).vocab_size, VOCAB)

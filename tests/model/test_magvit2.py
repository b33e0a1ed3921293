"""Show-o's MagVIT-v2 (`VQConfig.arch == "magvitv2"`): the published folder loads unchanged into model/magvit2.py.

The published layout comes from tests/fixtures/published/magvit2.py (written by hand from Show-o's sources);
the computation is checked against a plain-functional statement of Show-o's encoder, LFQ and decoder written
below from the state dict alone (F.conv2d, F.group_norm, F.pad, F.interpolate, softmax attention).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from components.core.config import TokenizerConfig
from components.data.tables import encode_png
from components.data.tokenizer import prepare_vq
from model.config import VQConfig
from model.magvit2 import MagvitV2Tokenizer, MsbLookupFreeQuantizer
from model.vla import VLAModel
from model.vq import build_vq, load_magvitv2, load_vq
from model.vq_tokenizer import VQTokenizer
from tests.fixtures.published.magvit2 import write_tiny_magvitv2
from tests.fixtures.published.reference import reference_codes, reference_corners, reference_decoder, reference_encoder
from tests.model.conftest import TINY, tiny

# every level a different width and depth, so a level read in the wrong order or direction cannot fit
CFG = VQConfig(arch="magvitv2", image_size=16, downsample=4, codebook_bits=5, base_channels=32, num_res_blocks=None,
               channel_mult=(1, 3, 2), res_blocks=(1, 2, 1), decoder_channel_mult=(2, 1, 3),
               decoder_res_blocks=(2, 1, 1))


def images(n: int, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, CFG.image_size, CFG.image_size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, dict[str, Tensor]]:
    folder = tmp_path_factory.mktemp("published") / "magvitv2"
    return folder, write_tiny_magvitv2(folder, CFG)


# --------------------------------------------------------------------------- code order


def test_codes_are_msb_first():
    q = MsbLookupFreeQuantizer(5)
    only = lambda d: torch.tensor([1.0 if i == d else -1.0 for i in range(5)])  # noqa: E731
    assert torch.equal(q.codes_to_corners(torch.tensor(1)), only(4))  # code 1: only the LAST channel positive
    assert torch.equal(q.codes_to_corners(torch.tensor(16)), only(0))  # code 2^(bits-1): only channel 0
    assert q.corners_to_codes(only(0)) == 16 and q.corners_to_codes(only(4)) == 1
    assert q.corners_to_codes(torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0])) == 0b11001
    codes = torch.arange(32)
    assert torch.equal(q.corners_to_codes(q.codes_to_corners(codes)), codes)
    # zero is not positive: bit 0 (Show-o's `z > 0`)
    assert q.corners_to_codes(torch.zeros(5)) == 0
    corners, got = q(torch.tensor([[0.3, -2.0, 0.0, 5.0, -0.1]]))
    assert torch.equal(corners, torch.tensor([[1.0, -1.0, -1.0, 1.0, -1.0]])) and got.item() == 0b10010


# --------------------------------------------------------------------------- the computation


def test_encoder_quantiser_and_decoder_match_shows_computation(published):
    folder, sd = published
    tok = load_magvitv2(folder, CFG).eval()
    x = images(3)
    z = reference_encoder(sd, CFG, x)  # (3, 5, 4, 4)
    torch.testing.assert_close(tok.latents(x), z.flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-5)
    codes = reference_codes(z)
    assert (z.abs() > 1e-4).all()  # no latent so near zero that float rounding could flip its bit
    assert torch.equal(tok.encode(x), codes) and codes.unique().numel() > 8
    corners = reference_corners(codes, CFG.codebook_bits, 4)
    expected = reference_decoder(sd, CFG, corners)
    assert expected.abs().max() > 1e-2  # a decoder that output zeros would not pass unnoticed
    torch.testing.assert_close(tok.decode(codes), expected.clamp(-1, 1), rtol=1e-5, atol=1e-5)
    # the decoder on continuous latents too (not only corners)
    torch.testing.assert_close(tok.decoder(z), reference_decoder(sd, CFG, z), rtol=1e-5, atol=1e-5)


def test_every_published_key_is_loaded_unchanged(published):
    folder, sd = published
    state = load_magvitv2(folder, CFG).state_dict()
    assert set(state) == set(sd)
    for key, value in sd.items():
        assert torch.equal(state[key], value), key
    assert not any(".attn." in k or "temb_proj" in k for k in state)  # empty attn lists, no time embedding


def test_a_bin_folder_loads_identically(published, tmp_path):
    folder, _ = published
    write_tiny_magvitv2(tmp_path / "bin", CFG, bin=True)
    a, b = load_magvitv2(folder, CFG), load_magvitv2(tmp_path / "bin", CFG)
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key
    assert torch.equal(a.encode(images(2)), b.encode(images(2)))


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_a_bin_is_read_weights_only(tmp_path, capsys):
    write_tiny_magvitv2(tmp_path, CFG, bin=True)
    torch.save({"encoder.conv_in.weight": _Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="weights_only=True") as err:
        load_magvitv2(tmp_path, CFG)
    assert str(tmp_path / "pytorch_model.bin") in str(err.value)
    assert "weights_only=False" not in str(err.value)  # torch's advice to turn the guard off is not passed on
    assert "unpickled" not in capsys.readouterr().out  # the payload never ran


# --------------------------------------------------------------------------- errors name the file and the key


@pytest.mark.parametrize("change, key", [
    ({"drop": "decoder.up.1.block.0.norm2.bias"}, "decoder.up.1.block.0.norm2.bias"),
    ({"extra": "encoder.down.0.attn.0.norm.weight"}, "encoder.down.0.attn.0.norm.weight"),
    ({"reshape": "encoder.mid.attn_1.q.weight"}, "encoder.mid.attn_1.q.weight"),
    ({"drop": "quantize.power_vals"}, "quantize.power_vals"),
])
def test_a_key_that_does_not_fit_fails_naming_it_and_the_file(tmp_path, change, key):
    write_tiny_magvitv2(tmp_path, CFG, **change)
    with pytest.raises(ValueError, match="does not fit|do not fit") as err:
        load_magvitv2(tmp_path, CFG)
    assert key in str(err.value) and str(tmp_path / "pytorch_model.safetensors") in str(err.value)


def test_every_unfit_key_is_listed_in_one_error(tmp_path):
    keys = ["decoder.conv_out.bias", "encoder.down.1.block.1.conv2.weight", "quantize.extra"]
    write_tiny_magvitv2(tmp_path, CFG, drop=keys[0], reshape=keys[1], extra=keys[2])
    with pytest.raises(ValueError) as err:
        load_magvitv2(tmp_path, CFG)
    assert all(k in str(err.value) for k in keys)


@pytest.mark.parametrize("field, value", [
    ("channel_mult", (1, 2, 2)), ("res_blocks", (1, 1, 1)), ("decoder_channel_mult", (3, 1, 2)),
    ("decoder_res_blocks", (2, 2, 1)), ("codebook_bits", 6), ("base_channels", 96),
])
def test_a_size_that_disagrees_with_the_config_names_the_config_key(published, field, value):
    folder, _ = published
    with pytest.raises(ValueError, match=f"model.vq.{field}: ") as err:
        load_magvitv2(folder, dataclasses.replace(CFG, **{field: value}))
    assert str(folder / "pytorch_model.safetensors") in str(err.value)


def test_tables_in_another_code_order_are_refused(published, tmp_path):
    folder, sd = published
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    save_file({**sd, "quantize.power_vals": sd["quantize.power_vals"].flip(0)},
              str(tmp_path / "pytorch_model.safetensors"))
    with pytest.raises(ValueError, match="quantize.power_vals is not the MSB-first"):
        load_magvitv2(tmp_path, CFG)


def test_the_published_config_is_checked(published, tmp_path):
    folder, _ = published
    write_tiny_magvitv2(tmp_path, CFG)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "VQGANEncoder"}))
    with pytest.raises(ValueError, match=r"config.json: _class_name: expected 'MAGVITv2'"):
        load_magvitv2(tmp_path, CFG)
    with pytest.raises(ValueError, match="model.vq.arch"):
        load_magvitv2(folder, TINY.vq)
    with pytest.raises(FileNotFoundError, match="pytorch_model.safetensors or pytorch_model.bin"):
        (tmp_path / "pytorch_model.safetensors").unlink()
        (tmp_path / "config.json").write_text(json.dumps({"_class_name": "MAGVITv2"}))
        load_magvitv2(tmp_path, CFG)


# --------------------------------------------------------------------------- our folder format and the stage


def test_our_folder_round_trips_and_load_vq_dispatches_on_arch(published, tmp_path):
    folder, _ = published
    tok = load_magvitv2(folder, CFG)
    tok.save_pretrained(tmp_path / "vq")
    assert json.loads((tmp_path / "vq" / "vq_config.json").read_text())["vq"]["arch"] == "magvitv2"
    loaded = load_vq(tmp_path / "vq")
    assert isinstance(loaded, MagvitV2Tokenizer) and loaded.cfg == CFG
    assert torch.equal(loaded.encode(images(2)), tok.encode(images(2)))
    compact = build_vq(TINY.vq)
    compact.save_pretrained(tmp_path / "compact")
    assert isinstance(load_vq(tmp_path / "compact"), VQTokenizer) and isinstance(build_vq(CFG), MagvitV2Tokenizer)
    with pytest.raises(FileNotFoundError, match="published MagVIT-v2 folder"):
        load_vq(folder)
    with pytest.raises(ValueError, match="arch: VQTokenizer is the compact tokenizer"):
        VQTokenizer.from_pretrained(tmp_path / "vq")
    state = load_file(str(tmp_path / "vq" / "vq.safetensors"))
    del state["decoder.mid.attn_1.v.bias"]
    save_file(state, str(tmp_path / "vq" / "vq.safetensors"))
    with pytest.raises(ValueError, match=r"vq.safetensors: .*decoder.mid.attn_1.v.bias"):
        load_vq(tmp_path / "vq")


def _frames(folder: Path, count: int) -> Path:
    """A frames table holding only what the tokenizer stage reads (rgb_static PNGs)."""
    rng = np.random.default_rng(0)
    blobs = [encode_png(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)) for _ in range(count)]
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"rgb_static": pa.array(blobs, type=pa.binary())}), folder / "part-00000.parquet")
    return folder


def test_the_tokenizer_stage_converts_a_published_folder_and_refuses_to_fit_one(published, tmp_path):
    folder, _ = published
    model_cfg = tiny(vq=CFG)
    frames = _frames(tmp_path / "frames", 6)
    cfg = TokenizerConfig(pretrained=str(folder), steps=1, batch_size=2, lr=1e-3, entropy_weight=0.1, max_frames=4,
                          eval_frames=2, log_every=1, text_pretrained=None)
    summary = prepare_vq(cfg, model_cfg, frames, tmp_path / "vq", seed=0)
    assert not summary.fitted and summary.steps == 0 and summary.psnr_db > 0
    loaded = load_vq(tmp_path / "vq")
    assert loaded.cfg == CFG and torch.equal(loaded.encode(images(2)), load_magvitv2(folder, CFG).encode(images(2)))
    # our own folder keeps loading through tokenizer.pretrained, and is checked against model.vq
    again = prepare_vq(dataclasses.replace(cfg, pretrained=str(tmp_path / "vq")), model_cfg, frames,
                       tmp_path / "vq2", seed=0)
    assert again.psnr_db == pytest.approx(summary.psnr_db)
    with pytest.raises(ValueError, match="tokenizer.pretrained: .* but model.vq is"):
        prepare_vq(dataclasses.replace(cfg, pretrained=str(tmp_path / "vq")), TINY, frames, tmp_path / "x", seed=0)
    with pytest.raises(ValueError, match="tokenizer.pretrained: model.vq.arch `magvitv2` .* does not fit"):
        prepare_vq(dataclasses.replace(cfg, pretrained=None), model_cfg, frames, tmp_path / "y", seed=0)


# --------------------------------------------------------------------------- inside the VLA


def test_the_vla_builds_encodes_and_decodes_with_magvitv2(published, tmp_path):
    folder, _ = published
    cfg = tiny(vq=CFG)
    torch.manual_seed(0)
    tok = load_magvitv2(folder, CFG)
    model = VLAModel.build(cfg, vq=tok).eval()
    assert isinstance(model.vq, MagvitV2Tokenizer) and not any(p.requires_grad for p in model.vq.parameters())
    codes = model.vq.encode(images(2))
    assert codes.shape == (2, CFG.tokens_per_image) and torch.equal(codes, tok.encode(images(2)))
    pictures = model.decode_codes(codes)
    assert pictures.shape == (2, cfg.num_views, 3, 16, 16)
    torch.testing.assert_close(pictures[:, 0], tok.decode(codes))
    model.save_pretrained(tmp_path / "ckpt")
    reloaded = VLAModel.from_pretrained(tmp_path / "ckpt")
    assert reloaded.cfg.vq == CFG and torch.equal(reloaded.vq.encode(images(2)), codes)

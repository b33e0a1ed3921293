"""VQ tokenizer: shapes and ranges, the lookup-free quantiser's algebra, training, save/load."""

from __future__ import annotations

import math

import pytest
import torch

from model.config import VQConfig
from model.vq_tokenizer import LookupFreeQuantizer, VQTokenizer

CFG = VQConfig(arch="compact", image_size=32, downsample=8, codebook_bits=6, base_channels=8, num_res_blocks=1,
               channel_mult=None, res_blocks=None, decoder_channel_mult=None, decoder_res_blocks=None)


def smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]: coloured gradients and a bright square, like a tabletop scene."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images = []
    for _ in range(n):
        a, b, c = (torch.rand(3, generator=g) * 2 - 1)
        img = torch.stack([a * x, b * y, c * x * y])
        top, left = torch.randint(0, size - 8, (2,), generator=g).tolist()
        img[:, top:top + 8, left:left + 8] = 0.9
        images.append(img)
    return torch.stack(images).clamp(-1, 1)


def test_encode_decode_shapes_and_ranges():
    tok = VQTokenizer(CFG)
    codes = tok.encode(smooth_images(3))
    assert codes.shape == (3, 16) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < 64
    images = tok.decode(codes)
    assert images.shape == (3, 3, 32, 32) and images.abs().max() <= 1.0
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 32, 32\)"):
        tok.encode(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 64\)"):
        tok.decode(torch.full((1, 16), 64))


def test_lfq_codes_and_corners_are_a_bijection_with_straight_through_gradient():
    q = LookupFreeQuantizer(5)
    codes = torch.arange(32)
    corners = q.codes_to_corners(codes)
    assert set(corners.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(q.corners_to_codes(corners), codes)
    z = (corners * 0.3).requires_grad_()
    quantised, got = q(z)
    assert torch.equal(got, codes) and torch.equal(quantised.detach(), corners)
    quantised.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_lfq_entropy_rewards_confident_and_diverse_codes():
    q = LookupFreeQuantizer(4)
    corners = q.codes_to_corners(torch.arange(16))
    diverse, _ = q.aux_losses(corners)  # every code once, each assignment certain
    collapsed, _ = q.aux_losses(corners[:1].expand(16, -1))  # one code for all
    unsure, _ = q.aux_losses(torch.zeros(16, 4))  # all codes equally likely for every token
    assert diverse.item() == pytest.approx(-math.log(16), abs=1e-3)
    assert collapsed.item() == pytest.approx(0.0, abs=1e-3)
    assert unsure.item() == pytest.approx(0.0, abs=1e-3)
    _, commitment = q.aux_losses(corners)
    assert commitment.item() == pytest.approx(0.0)


def test_training_lowers_reconstruction_error():
    torch.manual_seed(0)
    tok = VQTokenizer(CFG)
    images = smooth_images(8)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    recon = []
    for _ in range(60):
        loss, metrics = tok.training_loss(images, entropy_weight=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        recon.append(metrics["recon"].item())
    assert min(recon[-10:]) < 0.5 * recon[0], f"{recon[0]:.3f} -> {min(recon[-10:]):.3f}"
    assert metrics["code_usage"].item() > 4 / 64  # the entropy term keeps several codes in use
    assert {"recon", "entropy", "commitment", "code_usage"} == set(metrics)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    tok = VQTokenizer(CFG)
    tok.save_pretrained(tmp_path / "vq")
    loaded = VQTokenizer.from_pretrained(tmp_path / "vq")
    images = smooth_images(2)
    assert loaded.cfg == CFG
    assert torch.equal(loaded.encode(images), tok.encode(images))
    assert torch.equal(loaded.decode(tok.encode(images)), tok.decode(tok.encode(images)))
    with pytest.raises(FileNotFoundError, match="not a VQ tokenizer folder"):
        VQTokenizer.from_pretrained(tmp_path / "missing")

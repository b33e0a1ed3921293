"""MagVIT-v2-style VQ image tokenizer: conv encoder, lookup-free quantiser, conv decoder.

Images (B, 3, S, S) in [-1, 1] <-> codes (B, (S / downsample)^2) in [0, 2^codebook_bits), row-major.
Small enough to fit on a CPU at the default size (64 px -> 8x8 codes); at paper scale the same class
holds a 512 px / 16x / 8192-code tokenizer. The `tokenizer` stage drives `training_loss`; the
`pretokenize` stage calls `encode`; the policy calls `decode` only to visualise predicted frames.

Training objective: reconstruction MSE + entropy_weight * LFQ entropy + 0.25 * commitment
(MagVIT-v2's perceptual and adversarial terms are not implemented).

Lookup-free quantisation (MagVIT-v2 §3.1): each latent channel is quantised to its sign. A latent
with `bits` channels becomes a corner of the {-1, +1}^bits hypercube; the code index is the binary
number of its positive channels, c = sum_d [z_d > 0] * 2^d, so the codebook needs no lookup table.
* entropy = E[H(p(code | z))] - H(E[p(code | z)]): confident per-token assignments, evenly used codebook;
  p(code | z) = softmax over codes of -||z - c||^2 * inv_temperature (exact over all 2^bits codes);
* commitment = ||z - sg(q)||^2, keeping latents near their corners.

    tok = VQTokenizer(cfg.vq); loss, metrics = tok.training_loss(images, entropy_weight=0.1)
    tok.save_pretrained("artifacts/vq"); tok = VQTokenizer.from_pretrained("artifacts/vq")
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from model.config import COMPACT_VQ, VQConfig

# softmax sharpness of the code distribution used by the entropy term (open-MAGVIT2's value)
INV_TEMPERATURE = 100.0


class LookupFreeQuantizer(nn.Module):
    """Sign quantiser over `bits` channels with a straight-through gradient."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits
        self.register_buffer("powers", 2 ** torch.arange(bits), persistent=False)

    @property
    def codebook_size(self) -> int:
        """2^bits."""
        return 2**self.bits

    def codes_to_corners(self, codes: Tensor) -> Tensor:
        """(...,) long codes -> (..., bits) float corners in {-1, +1}."""
        bits = (codes[..., None] // self.powers) % 2
        return bits.float() * 2 - 1

    def corners_to_codes(self, corners: Tensor) -> Tensor:
        """(..., bits) latents -> (...,) long codes from their signs."""
        return ((corners > 0).long() * self.powers).sum(dim=-1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Quantise channel-last latents.

        Args:
            z: (..., bits) float latents.

        Returns:
            q: (..., bits) corners in {-1, +1}, carrying z's gradient (straight-through).
            codes: (...,) long code indices in [0, 2^bits).
        """
        corners = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
        q = z + (corners - z).detach()
        return q, self.corners_to_codes(z)

    def aux_losses(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Entropy and commitment terms over a batch of latents.

        Args:
            z: (N, bits) float latents (all tokens of the batch, flattened).

        Returns:
            entropy: scalar, per-token entropy minus codebook entropy (lower is better; >= -bits*ln2).
            commitment: scalar, mean ||z - sg(q)||^2 per channel.
        """
        z = z.float()
        corners = self.codes_to_corners(torch.arange(self.codebook_size, device=z.device))  # (C, bits)
        # -||z - c||^2 = 2 z.c - const, so the softmax needs only the dot products
        logits = 2 * INV_TEMPERATURE * (z @ corners.T)  # (N, C)
        log_p = logits.log_softmax(dim=-1)
        per_token = -(log_p.exp() * log_p).sum(dim=-1).mean()
        mean_p = log_p.exp().mean(dim=0)
        codebook = -(mean_p * (mean_p + 1e-10).log()).sum()
        commitment = (z - torch.where(z > 0, 1.0, -1.0)).pow(2).mean()
        return per_token - codebook, commitment


# weight of the commitment term (MagVIT-v2 / VQ-VAE's beta)
COMMITMENT_WEIGHT = 0.25
CONFIG_NAME = "vq_config.json"
WEIGHTS_NAME = "vq.safetensors"


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, max(1, channels // 4)), channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, plus a (projected) skip."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
                                  _norm(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """(B, c_in, H, W) -> (B, c_out, H, W)."""
        return self.skip(x) + self.body(x)


def _stage(c_in: int, c_out: int, blocks: int) -> list[nn.Module]:
    return [ResBlock(c_in if i == 0 else c_out, c_out) for i in range(blocks)] or [nn.Conv2d(c_in, c_out, 1)]


def _channels(cfg: VQConfig) -> list[int]:
    """Channels per resolution level: base * (1, 2, 4, 4, ...), one entry per level plus the bottom."""
    levels = int(math.log2(cfg.downsample))
    return [cfg.base_channels * min(2**i, 4) for i in range(levels + 1)]


class Encoder(nn.Module):
    """(B, 3, S, S) -> (B, bits, S/ds, S/ds) latents."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        ch = _channels(cfg)
        layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, padding=1)]
        for i in range(len(ch) - 1):
            layers += _stage(ch[i], ch[i], cfg.num_res_blocks)
            layers.append(nn.Conv2d(ch[i], ch[i + 1], 3, stride=2, padding=1))
        layers += _stage(ch[-1], ch[-1], cfg.num_res_blocks)
        layers += [_norm(ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], cfg.codebook_bits, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """See the class docstring."""
        return self.net(x)


class Decoder(nn.Module):
    """(B, bits, S/ds, S/ds) corners -> (B, 3, S, S) images (unbounded; clamp for display)."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        ch = _channels(cfg)
        layers: list[nn.Module] = [nn.Conv2d(cfg.codebook_bits, ch[-1], 3, padding=1)]
        layers += _stage(ch[-1], ch[-1], cfg.num_res_blocks)
        for i in reversed(range(len(ch) - 1)):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i + 1], ch[i], 3, padding=1)]
            layers += _stage(ch[i], ch[i], cfg.num_res_blocks)
        layers += [_norm(ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """See the class docstring."""
        return self.net(x)


class VQTokenizer(nn.Module):
    """Encoder + lookup-free quantiser + decoder (see the module docstring)."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        cfg.validate()
        if cfg.arch != "compact":  # model.vq.build_vq / load_vq pick the class of cfg.arch
            raise ValueError(f"arch: VQTokenizer is the compact tokenizer, got {cfg.arch!r}")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = LookupFreeQuantizer(cfg.codebook_bits)
        self.decoder = Decoder(cfg)

    @property
    def grid(self) -> int:
        """Side of the code grid, image_size / downsample."""
        return self.cfg.image_size // self.cfg.downsample

    def _check_images(self, images: Tensor) -> None:
        size = self.cfg.image_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2:] != (size, size):
            raise ValueError(f"VQTokenizer: expected images (B, 3, {size}, {size}) in [-1, 1], "
                             f"got {tuple(images.shape)}")

    def latents(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) -> (B, N, bits) channel-last encoder latents, N = grid^2 row-major."""
        self._check_images(images)
        dtype = self.encoder.net[0].weight.dtype  # bf16 when the model was cast for inference
        return self.encoder(images.to(dtype)).flatten(2).transpose(1, 2)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) images in [-1, 1] -> (B, N) long codes."""
        _, codes = self.quantizer(self.latents(images))
        return codes

    def decode_corners(self, corners: Tensor) -> Tensor:
        """(B, N, bits) quantised latents -> (B, 3, S, S) reconstructions (unclamped)."""
        b = corners.shape[0]
        grid = corners.transpose(1, 2).reshape(b, self.cfg.codebook_bits, self.grid, self.grid)
        return self.decoder(grid)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """(B, N) long codes -> (B, 3, S, S) images clamped to [-1, 1]."""
        if codes.dim() != 2 or codes.shape[1] != self.grid**2:
            raise ValueError(f"VQTokenizer.decode: expected codes (B, {self.grid ** 2}), got {tuple(codes.shape)}")
        if codes.min() < 0 or codes.max() >= self.quantizer.codebook_size:
            raise ValueError(f"VQTokenizer.decode: codes must lie in [0, {self.quantizer.codebook_size})")
        corners = self.quantizer.codes_to_corners(codes).to(self.decoder.net[0].weight.dtype)
        return self.decode_corners(corners).clamp(-1, 1).float()

    def training_loss(self, images: Tensor, *, entropy_weight: float) -> tuple[Tensor, dict[str, Tensor]]:
        """Reconstruction + LFQ terms for one batch.

        Args:
            images: (B, 3, S, S) in [-1, 1].
            entropy_weight: weight of the LFQ entropy term (`tokenizer.entropy_weight`).

        Returns:
            loss: scalar to backpropagate.
            metrics: detached scalars `recon`, `entropy`, `commitment`, `code_usage` (fraction of the
            codebook used in this batch).
        """
        z = self.latents(images)
        q, codes = self.quantizer(z)
        recon = (self.decode_corners(q) - images).pow(2).mean()
        entropy, commitment = self.quantizer.aux_losses(z.reshape(-1, z.shape[-1]))
        loss = recon + entropy_weight * entropy + COMMITMENT_WEIGHT * commitment
        usage = codes.unique().numel() / self.quantizer.codebook_size
        metrics = {"recon": recon.detach(), "entropy": entropy.detach(), "commitment": commitment.detach(),
                   "code_usage": torch.tensor(usage)}
        return loss, metrics

    def save_pretrained(self, folder: str | Path) -> None:
        """Write `vq_config.json` + `vq.safetensors` into `folder`."""
        save_vq_folder(folder, self.cfg, self.state_dict())

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> VQTokenizer:
        """Load a folder written by `save_pretrained`."""
        cfg, state = read_vq_folder(folder)
        tok = cls(cfg)
        tok.load_state_dict(state)
        return tok.to(map_location)


def save_vq_folder(folder: str | Path, cfg: VQConfig, state: dict[str, Tensor]) -> None:
    """Our VQ folder format, either arch: `vq_config.json` ({"vq": VQConfig}) + `vq.safetensors`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps({"vq": dataclasses.asdict(cfg)}, indent=2))
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(folder / WEIGHTS_NAME))


def read_vq_folder(folder: str | Path) -> tuple[VQConfig, dict[str, Tensor]]:
    """The config and weights of a folder written by `save_vq_folder`.

    Folders written before `VQConfig.arch` existed are compact tokenizers; JSON lists become tuples.
    """
    folder = Path(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: missing {name} (not a VQ tokenizer folder)")
    raw = {**COMPACT_VQ, **json.loads((folder / CONFIG_NAME).read_text())["vq"]}
    cfg = VQConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    return cfg, load_file(str(folder / WEIGHTS_NAME))

"""Show-o's MagVIT-v2 image tokenizer computed exactly, so that its published `magvitv2` weights load unchanged.

Selected by `VQConfig.arch == "magvitv2"` (`model.vq.build_vq`). The published tokenizer is this module at
base_channels 128, channel_mult [1, 2, 2, 4, 4], res_blocks [4, 3, 4, 3, 4], decoder_channel_mult
[1, 1, 2, 2, 4], decoder_res_blocks [4, 4, 3, 4, 3] and codebook_bits 13: a 512 px image becomes 32 x 32 codes
of 8192. Parameter and buffer names are the published state dict's (Show-o `models/modeling_magvitv2.py` and
`models/common_modules.py`; specs/published-weights.md §2). Every norm is GroupNorm(32, eps 1e-6), swish = SiLU.

* Encoder: conv_in; per level, res_blocks[i] ResnetBlocks to base * channel_mult[i] channels, then (all but the
  last level) a stride-2 3x3 conv of the input zero-padded by one on the right and bottom only; mid
  (ResnetBlock, self-attention over positions, ResnetBlock); norm, swish, conv_out to codebook_bits; 1x1 quant_conv.
* Quantiser (lookup-free): a channel > 0 is bit 1 and channel 0 is the MOST significant bit,
  code = sum_d [z_d > 0] * 2^(bits - 1 - d) -- the reverse of the compact tokenizer's order.
* Decoder: 1x1 post_quant_conv; conv_in; mid; levels from the deepest, decoder_res_blocks[i] ResnetBlocks to
  base * decoder_channel_mult[i] channels, then (all but level 0) nearest x2 and a 3x3 conv; norm, swish, conv_out.

The published `attn_resolutions` ([5]) is never reached, so no level has attention and the empty `attn` lists
hold no weights; dropout is 0. Nothing here trains it (the paper never does): the `tokenizer` stage loads it.

    tok = load_magvitv2("checkpoints/magvitv2", cfg.vq)   # model/vq.py: the published folder, checked against cfg.vq
    tok.save_pretrained("artifacts/vq"); tok = MagvitV2Tokenizer.from_pretrained("artifacts/vq")
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import VQConfig
from model.vq_tokenizer import WEIGHTS_NAME, read_vq_folder, save_vq_folder
from model.weights_io import check_keys


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


def _conv3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1)


class ResnetBlock(nn.Module):
    """norm1, swish, conv1, norm2, swish, conv2, plus the input (through a 1x1 `nin_shortcut` when widths differ)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), _conv3(c_in, c_out)
        self.norm2, self.conv2 = _norm(c_out), _conv3(c_out, c_out)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, c_in, H, W) -> (B, c_out, H, W)."""
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head softmax self-attention over the H*W positions (1x1 q/k/v/proj_out convs), residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W); scores scaled by C^-1/2."""
        b, c, h, w = x.shape
        x_norm = self.norm(x)
        q, k, v = (conv(x_norm).flatten(2).transpose(1, 2)[:, None] for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)[:, 0]  # (B, HW, C)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Halve H and W: pad right and bottom by one zero, then a 3x3 stride-2 conv without padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H/2, W/2)."""
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W)."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Mid(nn.Module):
    """block_1, attn_1, block_2 at the lowest resolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, C, h, w)."""
        return self.block_2(self.attn_1(self.block_1(x)))


def _level(c_in: int, c_out: int, blocks: int) -> tuple[nn.Module, int]:
    """A level's `block` list and the width it leaves (c_in when it has no blocks)."""
    level = nn.Module()
    level.block = nn.ModuleList(ResnetBlock(c_in if j == 0 else c_out, c_out) for j in range(blocks))
    return level, (c_out if blocks else c_in)


class Encoder(nn.Module):
    """(B, 3, S, S) in [-1, 1] -> (B, bits, S/ds, S/ds) latents (after quant_conv)."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        ch, bits = cfg.base_channels, cfg.codebook_bits
        self.conv_in = _conv3(3, ch)
        self.down, c = nn.ModuleList(), ch
        for i, (mult, blocks) in enumerate(zip(cfg.channel_mult, cfg.res_blocks, strict=True)):
            level, c = _level(c, ch * mult, blocks)
            if i < len(cfg.channel_mult) - 1:
                level.downsample = Downsample(c)
            self.down.append(level)
        self.mid = Mid(c)
        self.norm_out, self.conv_out, self.quant_conv = _norm(c), _conv3(c, bits), nn.Conv2d(bits, bits, 1)

    def forward(self, x: Tensor) -> Tensor:
        """See the class docstring."""
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.conv_out(F.silu(self.norm_out(self.mid(h))))
        return self.quant_conv(h)


class Decoder(nn.Module):
    """(B, bits, S/ds, S/ds) corners -> (B, 3, S, S) images (unbounded)."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        ch, bits, mults = cfg.base_channels, cfg.codebook_bits, cfg.decoder_channel_mult
        c = ch * mults[-1]
        self.post_quant_conv, self.conv_in, self.mid = nn.Conv2d(bits, bits, 1), _conv3(bits, c), Mid(c)
        levels: list[nn.Module | None] = [None] * len(mults)
        for i in reversed(range(len(mults))):  # built from the deepest, indexed by level (0 = full resolution)
            levels[i], c = _level(c, ch * mults[i], cfg.decoder_res_blocks[i])
            if i > 0:
                levels[i].upsample = Upsample(c)
        self.up = nn.ModuleList(levels)
        self.norm_out, self.conv_out = _norm(c), _conv3(c, 3)

    def forward(self, z: Tensor) -> Tensor:
        """See the class docstring."""
        h = self.mid(self.conv_in(self.post_quant_conv(z)))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class MsbLookupFreeQuantizer(nn.Module):
    """Sign quantiser whose channel 0 is the most significant bit; `embedding` and `power_vals` are Show-o's buffers."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits
        powers = 2 ** torch.arange(bits - 1, -1, -1)
        self.register_buffer("embedding", ((torch.arange(2**bits)[:, None] // powers) % 2).float() * 2 - 1)
        self.register_buffer("power_vals", powers)

    @property
    def codebook_size(self) -> int:
        """2^bits."""
        return 2**self.bits

    def codes_to_corners(self, codes: Tensor) -> Tensor:
        """(...,) long codes -> (..., bits) corners in {-1, +1} (rows of `embedding`)."""
        return self.embedding[codes]

    def corners_to_codes(self, z: Tensor) -> Tensor:
        """(..., bits) latents -> (...,) long codes from their signs, channel 0 first."""
        return ((z > 0).long() * self.power_vals).sum(dim=-1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(..., bits) latents -> corners (straight-through) and (...,) long codes."""
        corners = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
        return z + (corners - z).detach(), self.corners_to_codes(z)

    def check_buffers(self, source: str | Path) -> None:
        """Raise naming `source` and the key when a loaded buffer is not the MSB-first table it must be."""
        fresh = MsbLookupFreeQuantizer(self.bits)
        for name in ("embedding", "power_vals"):
            if not torch.equal(getattr(self, name).cpu().long(), getattr(fresh, name).long()):
                raise ValueError(f"{source}: quantize.{name} is not the MSB-first {self.bits}-bit code table "
                                 "(channel 0 the most significant bit); codes would mean other corners")


class MagvitV2Tokenizer(nn.Module):
    """Encoder + MSB-first lookup-free quantiser + decoder (see the module docstring); the VQTokenizer interface."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        cfg.validate()
        if cfg.arch != "magvitv2":
            raise ValueError(f"arch: MagvitV2Tokenizer needs `magvitv2`, got {cfg.arch!r}")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantize = MsbLookupFreeQuantizer(cfg.codebook_bits)
        self.decoder = Decoder(cfg)

    @property
    def quantizer(self) -> MsbLookupFreeQuantizer:
        """The quantiser (`quantize` in the published state dict)."""
        return self.quantize

    @property
    def grid(self) -> int:
        """Side of the code grid, image_size / downsample."""
        return self.cfg.image_size // self.cfg.downsample

    def latents(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, N, bits) channel-last encoder latents, N = grid^2 row-major."""
        size = self.cfg.image_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2:] != (size, size):
            raise ValueError(f"MagvitV2Tokenizer: expected images (B, 3, {size}, {size}) in [-1, 1], "
                             f"got {tuple(images.shape)}")
        dtype = self.encoder.conv_in.weight.dtype  # bf16 when the model was cast for inference
        return self.encoder(images.to(dtype)).flatten(2).transpose(1, 2)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) images in [-1, 1] -> (B, N) long codes."""
        return self.quantize.corners_to_codes(self.latents(images))

    def decode_corners(self, corners: Tensor) -> Tensor:
        """(B, N, bits) quantised latents -> (B, 3, S, S) reconstructions (unclamped)."""
        grid = corners.transpose(1, 2).reshape(corners.shape[0], self.cfg.codebook_bits, self.grid, self.grid)
        return self.decoder(grid.to(self.decoder.conv_in.weight.dtype))

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """(B, N) long codes -> (B, 3, S, S) float images clamped to [-1, 1]."""
        if codes.dim() != 2 or codes.shape[1] != self.grid**2:
            raise ValueError(f"MagvitV2Tokenizer.decode: expected codes (B, {self.grid ** 2}), "
                             f"got {tuple(codes.shape)}")
        if codes.min() < 0 or codes.max() >= self.quantize.codebook_size:
            raise ValueError(f"MagvitV2Tokenizer.decode: codes must lie in [0, {self.quantize.codebook_size})")
        return self.decode_corners(self.quantize.codes_to_corners(codes)).clamp(-1, 1).float()

    def save_pretrained(self, folder: str | Path) -> None:
        """Write our folder format: `vq_config.json` (with `arch`) + `vq.safetensors`."""
        save_vq_folder(folder, self.cfg, self.state_dict())

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> MagvitV2Tokenizer:
        """Load a folder written by `save_pretrained` (every key checked, model.weights_io.check_keys)."""
        cfg, state = read_vq_folder(folder)
        return cls(cfg).load_checked(state, Path(folder) / WEIGHTS_NAME).to(map_location)

    def load_checked(self, state: Mapping[str, Tensor], source: str | Path) -> MagvitV2Tokenizer:
        """Load `state` after checking every key and shape and the quantiser's tables; returns self."""
        check_keys(source, {k: tuple(v.shape) for k, v in state.items()},
                   {k: tuple(v.shape) for k, v in self.state_dict().items()}, "the MagVIT-v2 tokenizer of model.vq")
        self.load_state_dict(dict(state))
        self.quantize.check_buffers(source)
        return self

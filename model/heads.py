"""Action heads: the MAP head (UP-VLA) and the bin tokenizer of the RT-2 baseline.

`MAPHead`: one learned latent cross-attends to the k action-query states (multi-head attention
pooling), then a SwiGLU MLP block and a linear layer map it to a chunk of k actions; the last action
channel is the gripper *logit* (trained with BCE), the others the relative pose (trained with MSE).

`ActionBinner`: CALVIN actions in [-1, 1] <-> integer bins (RT-2 discretisation): pose dims use
`bins` uniform bins; the gripper (exactly -1 or +1) uses bin 0 or bin `bins - 1`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# MAP head MLP width as a multiple of the backbone width (the reference: 2048 -> 8192)
MLP_RATIO = 4


class SwiGLU(nn.Module):
    """SwiGLU feed-forward: W2 (silu(W1 x) * W3 x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) -> (..., dim)."""
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class MAPHead(nn.Module):
    """Multi-head attention pooling of k query states -> (B, k, action_dim) action chunk.

    Args:
        dim: backbone width D.
        heads: attention heads of the latent query.
        chunk_len: k, queries in and actions out.
        action_dim: 7 (6-D relative pose + gripper logit).
    """

    def __init__(self, dim: int, heads: int, chunk_len: int, action_dim: int):
        super().__init__()
        self.chunk_len, self.action_dim = chunk_len, action_dim
        self.proj = nn.Linear(dim, dim)
        self.latent = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_attn = nn.RMSNorm(dim)
        self.mlp = SwiGLU(dim, MLP_RATIO * dim)
        self.norm_mlp = nn.RMSNorm(dim)
        self.to_actions = nn.Linear(dim, chunk_len * action_dim)

    def forward(self, states: Tensor) -> Tensor:
        """(B, k, D) final hidden states of the action queries -> (B, k, action_dim) raw outputs."""
        x = self.proj(states)
        latent = self.latent.expand(x.shape[0], -1, -1).to(x.dtype)
        pooled, _ = self.attn(latent, x, x, need_weights=False)
        pooled = _fp32_norm(self.norm_attn, latent + pooled)
        pooled = _fp32_norm(self.norm_mlp, pooled + self.mlp(pooled))
        return self.to_actions(pooled[:, 0]).view(-1, self.chunk_len, self.action_dim)


def _fp32_norm(norm: nn.RMSNorm, x: Tensor) -> Tensor:
    """RMSNorm computed in fp32 and returned in x's dtype (bf16 autocast or bf16 weights alike)."""
    out = F.rms_norm(x.float(), norm.normalized_shape, norm.weight.float(), norm.eps)
    return out.to(x.dtype)


def actions_from_outputs(raw: Tensor) -> Tensor:
    """(B, k, A) raw head outputs -> CALVIN actions: pose clamped to [-1, 1], gripper sign(logit) in {-1, 1}."""
    pose = raw[..., :-1].clamp(-1.0, 1.0)
    gripper = torch.where(raw[..., -1:] > 0, 1.0, -1.0).to(raw.dtype)
    return torch.cat([pose, gripper], dim=-1)


class ActionBinner:
    """CALVIN actions <-> bins for the RT-2 head (see the module docstring)."""

    def __init__(self, bins: int):
        self.bins = bins

    def to_bins(self, actions: Tensor) -> Tensor:
        """(..., A) float actions in [-1, 1] -> (..., A) long bins in [0, bins)."""
        pose = ((actions[..., :-1].clamp(-1, 1) + 1) / 2 * (self.bins - 1)).round().long()
        gripper = torch.where(actions[..., -1:] > 0, self.bins - 1, 0).long()
        return torch.cat([pose, gripper], dim=-1)

    def from_bins(self, bins: Tensor) -> Tensor:
        """(..., A) long bins -> (..., A) float actions; the gripper is +1 for the upper half, else -1."""
        pose = bins[..., :-1].float() / (self.bins - 1) * 2 - 1
        gripper = torch.where(bins[..., -1:] >= self.bins // 2, 1.0, -1.0)
        return torch.cat([pose, gripper], dim=-1)

"""Action heads: the MAP heads (UP-VLA) and the bin tokenizer of the RT-2 baseline.

`MAPHead` (`map_variant: ours`): one learned latent cross-attends to the k action-query states (multi-head
attention pooling), then a SwiGLU MLP block and a linear layer map it to a chunk of k actions; the last action
channel is the gripper *logit* (trained with BCE), the others the relative pose (trained with MSE).

`ReferenceMAPHead` (`map_variant: reference`): the authors' MAPBlock + `to_logits` computed exactly, with their
parameter names, so UP-VLA-Calvin's `token_learner.*` / `to_logits.0.*` weights load unchanged. It differs from
`MAPHead` in: unbiased q/kv projections (kv rows: keys, then values), an RMSNorm x / max(rms(x), 1e-8) * g,
a SwishGLU whose first half is the value (value * silu(gate)), and a regressed gripper (MSE on all 7 dims).
`build_action_head(cfg)` picks the head from the config.

`ActionBinner`: CALVIN actions in [-1, 1] <-> integer bins (RT-2 discretisation): pose dims use
`bins` uniform bins; the gripper (exactly -1 or +1) uses bin 0 or bin `bins - 1`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import ModelConfig

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


class ReferenceRMSNorm(nn.Module):
    """The authors' RMSNorm: x / max(||x|| / sqrt(d), 1e-8) * g (the eps clamps the rms, not inside the root).

    Computed in fp32 and returned in x's dtype (bf16 inference); in fp32 the result is the authors' exactly.
    """

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.scale, self.eps = dim**-0.5, eps
        self.g = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) -> (..., dim)."""
        x32 = x.float()
        rms = torch.linalg.vector_norm(x32, dim=-1, keepdim=True) * self.scale
        return (x32 / rms.clamp(min=self.eps) * self.g.float()).to(x.dtype)


class SwishGLU(nn.Module):
    """The authors' gated MLP input: value * silu(gate), the value being the FIRST half of `project`'s output.

    (`SwiGLU` above splits gate first; the published weights need this order.)
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.project = nn.Linear(dim, 2 * hidden)

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) -> (..., hidden)."""
        value, gate = self.project(x).chunk(2, dim=-1)
        return value * F.silu(gate)


class MAPAttention(nn.Module):
    """Cross-attention of seed vectors over inputs: unbiased q and kv (rows: keys, then values), biased proj."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, seed: Tensor, x: Tensor) -> Tensor:
        """(B, K, D) seeds attend over (B, N, D) inputs -> (B, K, D)."""
        (b, k, d), n = seed.shape, x.shape[1]
        q = self.q(seed).view(b, k, self.heads, d // self.heads).transpose(1, 2)
        keys, values = self.kv(x).view(b, n, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        weights = (q @ (keys.transpose(-2, -1) * self.scale)).softmax(dim=-1)
        return self.proj((weights @ values).transpose(1, 2).reshape(b, k, d))


class MAPBlock(nn.Module):
    """The authors' post-norm attention-pooling block with one latent: (B, N, D) -> (B, D)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.projection = nn.Linear(dim, dim)
        self.latents = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.attn_norm = ReferenceRMSNorm(dim)
        self.attn = MAPAttention(dim, heads)
        self.mlp_norm = ReferenceRMSNorm(dim)
        self.mlp = nn.Sequential(SwishGLU(dim, MLP_RATIO * dim), nn.Linear(MLP_RATIO * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) inputs -> (B, D) pooled latent."""
        x = self.projection(x)
        latent = self.latents.expand(x.shape[0], -1, -1).to(x.dtype)
        latent = self.attn_norm(latent + self.attn(latent, x))
        latent = self.mlp_norm(latent + self.mlp(latent))
        return latent[:, 0]


class ReferenceMAPHead(nn.Module):
    """UP-VLA's action head (`token_learner` + `to_logits`): (B, k, D) -> (B, k, action_dim), gripper regressed.

    Args:
        dim: backbone width D.
        heads: attention heads actually used (the authors' `MAPBlock(n_heads=4)` doubles it: 8 at paper scale).
        chunk_len: k, queries in and actions out (the outputs are step-major: row i is step i's action).
        action_dim: 7 (6-D relative pose + gripper, all raw CALVIN `rel_actions` units).
    """

    def __init__(self, dim: int, heads: int, chunk_len: int, action_dim: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"map_heads: {heads} heads must divide the width {dim}")
        self.chunk_len, self.action_dim = chunk_len, action_dim
        self.token_learner = MAPBlock(dim, heads)
        self.to_logits = nn.Sequential(nn.Linear(dim, chunk_len * action_dim))

    def forward(self, states: Tensor) -> Tensor:
        """(B, k, D) final (post-layernorm) hidden states of the action queries -> (B, k, action_dim) raw outputs."""
        return self.to_logits(self.token_learner(states)).view(-1, self.chunk_len, self.action_dim)


def build_action_head(cfg: ModelConfig) -> MAPHead | ReferenceMAPHead | None:
    """The MAP head `cfg.map_variant` names, or None for the RT-2 bin tokens (`action_head: tokens`)."""
    if cfg.action_head != "map":
        return None
    head = ReferenceMAPHead if cfg.map_variant == "reference" else MAPHead
    return head(cfg.hidden_size, cfg.map_heads, cfg.chunk_len, cfg.action_dim)


def actions_from_outputs(raw: Tensor, *, clamp_pose: bool = True) -> Tensor:
    """(B, k, A) raw head outputs -> CALVIN actions: gripper sign(output) in {-1, 1}, pose clamped to [-1, 1].

    `clamp_pose` False passes the pose on as regressed, as the authors' rollout does (their reference head).
    """
    pose = raw[..., :-1].clamp(-1.0, 1.0) if clamp_pose else raw[..., :-1]
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

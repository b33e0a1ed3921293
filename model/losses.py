"""The three UP-VLA training terms and their weights: L = λ_MMU·L_MMU + λ_PRE·L_PRE + λ_ACT·L_ACT.

L_ACT is `action_loss` for our MAP head (pose MSE + gripper BCE), `reference_action_loss` for the authors' head
(MSE over all dims), `action_token_loss` for the RT-2 bins.

Every term takes logits already restricted to the relevant vocabulary slice (text rows for MMU,
codebook rows for PRE, bin rows for RT-2 actions): the reference's full-vocabulary image CE lets
text and special tokens compete with codes; restricting is both correct and cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class LossWeights:
    """λ of each term; a term with weight 0 is not computed and its inputs are not required."""

    mmu: float
    pre: float
    act: float

    def __post_init__(self) -> None:
        for name in ("mmu", "pre", "act"):
            if getattr(self, name) < 0:
                raise ValueError(f"lambda_{name}: must be >= 0, got {getattr(self, name)}")
        if self.mmu == self.pre == self.act == 0:
            raise ValueError("lambda_mmu, lambda_pre, lambda_act: at least one must be > 0")


def understanding_loss(text_logits: Tensor, targets: Tensor) -> Tensor:
    """L_MMU: next-token cross-entropy over answer tokens only.

    Args:
        text_logits: (K, T) logits over the text vocabulary at the K positions *preceding* answer tokens.
        targets: (K,) the answer tokens (text ids).
    """
    return F.cross_entropy(text_logits.float(), targets)


def future_image_loss(code_logits: Tensor, future_codes: Tensor) -> Tensor:
    """L_PRE: cross-entropy of the future frame's codes, predicted at the current frame's positions.

    Args:
        code_logits: (B, N, C) logits over the codebook at the N image-token positions.
        future_codes: (B, N) long codes of the frame delta_t steps ahead.
    """
    return F.cross_entropy(code_logits.flatten(0, 1).float(), future_codes.flatten())


def action_loss(raw: Tensor, actions: Tensor, mask: Tensor | None = None, *, pose_mean: Tensor | None = None,
                pose_std: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """L_ACT: MSE on the 6-D relative pose + BCE on the gripper, over valid chunk steps.

    Args:
        raw: (B, k, A) MAP head outputs; the last channel is the gripper logit, the others the pose in
            standardised units when `pose_mean`/`pose_std` are given.
        actions: (B, k, A) targets; pose in [-1, 1], gripper exactly -1 (close) or 1 (open).
        mask: (B, k) bool, False at steps past the end of the demonstration; None = all valid.
        pose_mean: (A-1,) per-dimension pose mean (with `pose_std`; None = 0).
        pose_std: (A-1,) per-dimension pose std: the MSE is taken on (pose - mean) / std; None = raw pose.

    Returns:
        The loss and detached parts `act_pose_mse` (in action units, comparable with or without
        standardisation), `act_gripper_bce`.
    """
    raw = raw.float()
    weight = actions.new_ones(actions.shape[:2]) if mask is None else mask.float()
    denom = weight.sum().clamp(min=1.0)
    target, pred = actions[..., :-1], raw[..., :-1]
    if pose_std is not None:
        mean = torch.zeros_like(pose_std) if pose_mean is None else pose_mean
        target = (target - mean) / pose_std
    pose = ((pred - target).pow(2).mean(dim=-1) * weight).sum() / denom
    if pose_std is not None:
        with torch.no_grad():
            units = (((pred - target) * pose_std).pow(2).mean(dim=-1) * weight).sum() / denom
    else:
        units = pose
    grip_target = (actions[..., -1] > 0).float()
    bce = F.binary_cross_entropy_with_logits(raw[..., -1], grip_target, reduction="none")
    gripper = (bce * weight).sum() / denom
    return pose + gripper, {"act_pose_mse": units.detach(), "act_gripper_bce": gripper.detach()}


def reference_action_loss(raw: Tensor, actions: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """L_ACT of `map_variant: reference`: the authors' `nn.MSELoss()` over every step and all dims, gripper included.

    Padded chunk steps count too, as in the reference (its padding, a zero pose and the last gripper repeated,
    is the one our datasets write), so no mask is taken.

    Args:
        raw: (B, k, A) ReferenceMAPHead outputs, raw CALVIN action units (gripper regressed).
        actions: (B, k, A) targets: raw `rel_actions`, gripper -1 (close) or 1 (open).

    Returns:
        The loss and detached parts `act_pose_mse` (first A-1 dims) and `act_gripper_mse` (last dim).
    """
    error = (raw.float() - actions.float()).pow(2)
    parts = {"act_pose_mse": error[..., :-1].mean().detach(), "act_gripper_mse": error[..., -1].mean().detach()}
    return error.mean(), parts


def action_token_loss(bin_logits: Tensor, bins: Tensor, mask: Tensor | None = None) -> Tensor:
    """L_ACT of the RT-2 head: next-token cross-entropy over action bins.

    Args:
        bin_logits: (B, k*A, K) logits over bins at the positions preceding each action token.
        bins: (B, k*A) long target bins.
        mask: (B, k*A) bool, False for tokens of padded chunk steps; None = all valid.
    """
    ce = F.cross_entropy(bin_logits.flatten(0, 1).float(), bins.flatten(), reduction="none")
    if mask is None:
        return ce.mean()
    weight = mask.flatten().float()
    return (ce * weight).sum() / weight.sum().clamp(min=1.0)

"""Greedy decoding through the backbone, with a KV cache: scene descriptions (MMU) and RT-2 action bins.

Both decode a batch of rows at once. Each new token is appended as a causal column whose rotary
position is the row's count of valid tokens so far, and which sees every valid earlier token (prompt
pads stay invisible), exactly as if the whole sequence had been packed and run again; the `use_cache`
= False path does that re-run and exists to check the cached one.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn
from transformers.cache_utils import DynamicCache

from model.batches import RobotBatch
from model.config import ModelConfig
from model.sequences import PackedSequence, decode_step_mask, last_valid_index
from model.vocab import TokenLayout


class Decoder(Protocol):
    """What decoding needs from the model (`VLAModel` provides it; this module does not import it)."""

    cfg: ModelConfig
    layout: TokenLayout
    backbone: nn.Module

    def embed(self, ids: Tensor) -> Tensor: ...  # noqa: D102

    def logits(self, hidden: Tensor, rows: slice) -> Tensor: ...  # noqa: D102

    def run_backbone(self, seq: PackedSequence) -> Tensor: ...  # noqa: D102

    def robot_sequence(self, batch: RobotBatch, action_ids: Tensor | None) -> PackedSequence: ...  # noqa: D102

    def mmu_sequence(self, pixel_values: Tensor, text_ids: Tensor) -> PackedSequence: ...  # noqa: D102

    def action_query_ids(self, batch_size: int, device: torch.device, bins: Tensor | None = None  # noqa: D102
                         ) -> Tensor: ...


def generate_text(model: Decoder, pixel_values: Tensor, prompt_ids: Tensor, max_new_tokens: int, *,
                  use_cache: bool = True) -> Tensor:
    """Greedy MMU answer to `prompt_ids` about the images; see `VLAModel.generate_description`.

    Returns:
        (B, n <= max_new_tokens) text ids, eos removed, [PAD] after a row's end.
    """
    seq = model.mmu_sequence(pixel_values, prompt_ids)
    tokens, _ = greedy_decode(model, seq, max_new_tokens, model.layout.text_slice, model.layout.eos_id,
                              use_cache=use_cache)
    return tokens


def decode_action_bins(model: Decoder, inputs: RobotBatch, *, use_cache: bool = True
                       ) -> tuple[Tensor, Tensor, PackedSequence]:
    """RT-2 head: decode k * action_dim bins after `<|act|>`, one token at a time.

    Returns:
        bins: (B, k * action_dim) long in [0, action_bins).
        hidden: (B, L, D) prefill hidden states (the image positions give the future-frame codes).
        seq: the packed prefill sequence.
    """
    b, device = inputs.current_codes.shape[0], inputs.current_codes.device
    seq = model.robot_sequence(inputs, model.action_query_ids(b, device))
    steps = model.cfg.chunk_len * model.cfg.action_dim
    tokens, hidden = greedy_decode(model, seq, steps, model.layout.bin_slice, None, use_cache=use_cache)
    return tokens - model.layout.bin_offset, hidden, seq


def greedy_decode(model: Decoder, seq: PackedSequence, steps: int, rows: slice, stop_id: int | None, *,
                  use_cache: bool = True, scores: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Append up to `steps` argmax tokens (restricted to vocabulary `rows`) after each row's last valid token.

    Args:
        model: the model whose backbone decodes.
        seq: the packed prompt.
        steps: most tokens to append.
        rows: vocabulary slice the tokens are chosen from (text, or action bins).
        stop_id: a row ends at this token, which is replaced by [PAD] like everything after it; None = no stop.
        use_cache: keep a KV cache (one column per step); False re-runs the whole sequence every step.
        scores: when given, each step's (B, rows) logits are appended to it (for tests and inspection).

    Returns:
        tokens: (B, n) unified ids, n = steps unless every row stopped earlier.
        prefill: (B, L, D) hidden states of the prompt.
    """
    b = seq.valid.shape[0]
    pad = model.layout.pad_id
    cache = DynamicCache(config=model.backbone.config) if use_cache else None
    prefill = model.backbone.model(inputs_embeds=seq.embeds, attention_mask=seq.attention_mask(),
                                   position_ids=seq.position_ids(), past_key_values=cache,
                                   use_cache=use_cache).last_hidden_state
    h = prefill[torch.arange(b, device=prefill.device), last_valid_index(seq.valid)]
    finished = torch.zeros(b, dtype=torch.bool, device=prefill.device)
    valid = seq.valid
    tokens: list[Tensor] = []
    for step in range(steps):
        logits = model.logits(h, rows)
        if scores is not None:
            scores.append(logits.float())
        token = logits.argmax(dim=-1) + rows.start
        if stop_id is not None:
            finished = finished | (token == stop_id)
            token = torch.where(finished, torch.full_like(token, pad), token)
        tokens.append(token)
        if step == steps - 1 or bool(finished.all()):
            break
        new_valid = ~finished
        if use_cache:
            h = _cached_step(model, valid, token, new_valid, cache)
        else:
            seq = _append(seq, model.embed(token[:, None]), new_valid[:, None])
            h = model.run_backbone(seq)[:, -1]
        valid = torch.cat([valid, new_valid[:, None]], dim=1)
    return torch.stack(tokens, dim=1), prefill


def _cached_step(model: Decoder, past_valid: Tensor, token: Tensor, new_valid: Tensor,
                 cache: DynamicCache) -> Tensor:
    """Run one new column (B,) through the cache; returns its (B, D) final hidden state."""
    mask = decode_step_mask(past_valid, new_valid)
    position = past_valid.long().sum(dim=1, keepdim=True)
    out = model.backbone.model(inputs_embeds=model.embed(token[:, None]), attention_mask=mask,
                               position_ids=position, past_key_values=cache, use_cache=True)
    return out.last_hidden_state[:, 0]


def _append(seq: PackedSequence, embeds: Tensor, valid: Tensor) -> PackedSequence:
    """`seq` with one causal column (B, 1, D) appended (the no-cache path)."""
    return PackedSequence(
        embeds=torch.cat([seq.embeds, embeds.to(seq.embeds.dtype)], dim=1),
        valid=torch.cat([seq.valid, valid], dim=1),
        block=torch.cat([seq.block, seq.block.new_zeros(1)]),
        spans=seq.spans,
    )

"""Sequence assembly and attention masks, built vectorised from segment ids.

A sequence is a list of named segments laid side by side in fixed columns for the whole batch
(e.g. task token | CLIP block | description | instruction | VQ block | action queries). Each
segment's rows may be padded (`valid` False); pads inside a segment are allowed, because positions
come from the running count of valid tokens, so real tokens always get contiguous rotary positions.

Who sees whom (query row i, key column j), for valid tokens:
* causal: j <= i;
* plus, inside a bidirectional segment (an image block: `<|soi|>`, image tokens, `<|eoi|>`), every
  token of the same segment, so image tokens see each other but never the action queries after them;
* a pad sees only itself and no valid token sees a pad (so no softmax row is empty and no NaN appears;
  pad outputs are never read).

The `reference` form (`PackedSequence.reference`, the authors' layout, `model.prompt_layout: reference`) changes
two rules to compute exactly what their model computes: a bidirectional segment's rows see every valid column of
the sequence, including the action queries after the block, and positions are column indices, so left pads
still take positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Segment:
    """One named stretch of a sequence.

    Attributes:
        name: key of the segment's column span in `PackedSequence.spans`.
        embeds: (B, n, D) input embeddings.
        valid: (B, n) bool, False at pads.
        bidirectional: tokens of this segment see each other (image blocks).
    """

    name: str
    embeds: Tensor
    valid: Tensor
    bidirectional: bool = False


@dataclass
class PackedSequence:
    """Segments concatenated along the sequence axis, with what the backbone needs.

    Attributes:
        embeds: (B, L, D).
        valid: (B, L) bool.
        block: (L,) long; 0 for causal tokens, k > 0 for the k-th bidirectional segment.
        spans: segment name -> slice of columns.
        reference: the authors' rules (module docstring): image rows see every valid column, positions are
            column indices.
    """

    embeds: Tensor
    valid: Tensor
    block: Tensor
    spans: dict[str, slice]
    reference: bool = False

    @property
    def length(self) -> int:
        """L, the number of columns."""
        return self.valid.shape[1]

    def attention_mask(self) -> Tensor:
        """(B, 1, L, L) bool, True where the row may attend to the column (see the module rules)."""
        return attention_mask(self.valid, self.block, open_blocks=self.reference)

    def position_ids(self) -> Tensor:
        """(B, L) long rotary positions: the count of valid tokens before each column (`reference`: the column)."""
        if self.reference:
            return torch.arange(self.length, device=self.valid.device).expand(self.valid.shape[0], -1)
        return position_ids(self.valid)


def pack(segments: list[Segment], *, reference: bool = False) -> PackedSequence:
    """Concatenate segments into one `PackedSequence` (block ids numbered in order; `reference`: see the class)."""
    spans, blocks, start, next_block = {}, [], 0, 1
    for seg in segments:
        n = seg.embeds.shape[1]
        if seg.valid.shape != seg.embeds.shape[:2]:
            raise ValueError(f"segment {seg.name}: valid {tuple(seg.valid.shape)} vs embeds {tuple(seg.embeds.shape)}")
        if seg.name in spans:
            raise ValueError(f"segment {seg.name}: appears twice")
        spans[seg.name] = slice(start, start + n)
        blocks.append(torch.full((n,), next_block if seg.bidirectional else 0, dtype=torch.long))
        next_block += int(seg.bidirectional)
        start += n
    device = segments[0].embeds.device
    return PackedSequence(
        embeds=torch.cat([s.embeds for s in segments], dim=1),
        valid=torch.cat([s.valid for s in segments], dim=1),
        block=torch.cat(blocks).to(device),
        spans=spans,
        reference=reference,
    )


def attention_mask(valid: Tensor, block: Tensor, *, open_blocks: bool = False) -> Tensor:
    """Boolean attention mask from validity and block ids.

    Args:
        valid: (B, L) bool.
        block: (L,) long, 0 = causal token, k > 0 = member of bidirectional block k.
        open_blocks: a block's rows see every column, before and after it (the authors' layout), not only
            the causal ones and their own block's.

    Returns:
        (B, 1, L, L) bool, True = may attend (SDPA's boolean convention).
    """
    idx = torch.arange(valid.shape[1], device=valid.device)
    causal = idx[None, :] <= idx[:, None]
    if open_blocks:
        sees = (block[:, None] > 0).expand(-1, valid.shape[1])
    else:
        sees = (block[:, None] == block[None, :]) & (block[:, None] > 0)
    allowed = (causal | sees)[None] & valid[:, :, None] & valid[:, None, :]
    pad_self = torch.diag_embed(~valid)  # a pad row attends to itself only, so its softmax is defined
    return (allowed | pad_self)[:, None]


def position_ids(valid: Tensor) -> Tensor:
    """(B, L) positions = number of valid tokens strictly before each column (pads reuse the last)."""
    return (valid.long().cumsum(dim=1) - valid.long()).clamp(min=0)


def decode_step_mask(past_valid: Tensor, new_valid: Tensor) -> Tensor:
    """Mask for one cached decoding step: the new token sees every valid past token and itself.

    Args:
        past_valid: (B, P) bool, validity of the cached columns.
        new_valid: (B,) bool, whether the new token is real (False once a row has finished).

    Returns:
        (B, 1, 1, P + 1) bool.
    """
    past = past_valid & new_valid[:, None]
    own = torch.ones_like(new_valid)[:, None]
    return torch.cat([past, own], dim=1)[:, None, None]


def last_valid_index(valid: Tensor) -> Tensor:
    """(B,) column of the last valid token of each row."""
    idx = torch.arange(valid.shape[1], device=valid.device)
    return torch.where(valid, idx, -1).amax(dim=1)


def reference_text_slot(instruction_ids: Tensor, pad_id: int, *, width: int, task_id: int, bos_id: int,
                        eos_id: int) -> Tensor:
    """The authors' left-padded text slot: [PAD]s, task token, bos, instruction, eos, `width` columns.

    As their prompting code: an instruction longer than `width - 3` tokens is cut to that length (the
    slot always ends with eos).

    Args:
        instruction_ids: (B, Li) long instruction tokens, right-padded with `pad_id`.
        pad_id: the `[PAD]` id.
        width: columns of the slot (their max_text_len + 1 = 577).
        task_id: `<|pre|>`.
        bos_id: the text tokenizer's bos (Phi: `<|endoftext|>`, its eos too).
        eos_id: the text tokenizer's eos.

    Returns:
        (B, width) long ids.

    Raises:
        ValueError: an instruction row has a [PAD] before a token, or `width` < 3.
    """
    if width < 3:
        raise ValueError(f"reference text slot: width {width} cannot hold <|pre|>, bos and eos")
    valid = instruction_ids != pad_id
    if (valid[:, 1:] & ~valid[:, :-1]).any():
        raise ValueError("RobotBatch.instruction_ids: must be right-padded ([PAD] only at the end)")
    b, li = instruction_ids.shape
    n = valid.sum(dim=1).clamp(max=width - 3)
    rel = torch.arange(width, device=instruction_ids.device)[None] - (width - (n + 3))[:, None]
    text = instruction_ids.gather(1, (rel - 2).clamp(0, max(li - 1, 0))) if li else instruction_ids.new_zeros(b, width)
    slot = torch.where((rel >= 2) & (rel < n[:, None] + 2), text, pad_id)
    slot = torch.where(rel == 0, task_id, slot)
    slot = torch.where(rel == 1, bos_id, slot)
    return torch.where(rel == n[:, None] + 2, eos_id, slot)

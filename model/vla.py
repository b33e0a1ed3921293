"""UP-VLA: one Phi backbone that understands (MMU), predicts the future frame (PRE) and acts (ACT).

Sequences (columns fixed per batch; [PAD]s inside text segments are masked out, see model/sequences.py):

    MMU:      <|mmu|> [<|soi|> CLIP x M <|eoi|>] text(prompt answer eos)
    PRE/ACT:  <|pre|> ([<|soi|> CLIP x M <|eoi|>] description)? instruction [<|soi|> codes x V*N <|eoi|>] actions
    actions:  <|act|> x k (MAP head)   |   <|act|> bin_1 .. bin_{7k-1} (RT-2 head, teacher forcing)

Brackets are bidirectional image blocks. The optional part is the paper's MMU-conditioned prompt L'.
With `model.proprio` the embedding of the robot state (model/proprio.py) is added to every `<|act|>`.
PRE logits are read at the current frame's code positions and trained on the future frame's codes.

    model = VLAModel(cfg)                                   # random init; VLAModel.build(...) loads folders
    loss, metrics = model(TrainBatch(robot, mmu), LossWeights(mmu=0.1, pre=1.0, act=1.0))
    pred = model.predict(RobotBatch(instruction_ids, current_codes, ...))   # actions + future codes
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.backbone import build_phi, build_vision_tower
from model.batches import IGNORE, MMUBatch, Prediction, RobotBatch, TrainBatch
from model.config import ModelConfig
from model.generation import decode_action_bins, generate_text
from model.heads import ActionBinner, actions_from_outputs, build_action_head
from model.losses import (
    LossWeights,
    action_loss,
    action_token_loss,
    future_image_loss,
    reference_action_loss,
    understanding_loss,
)
from model.pretrained import PretrainedMixin
from model.proprio import ProprioEncoder
from model.sequences import PackedSequence, Segment, pack, reference_text_slot
from model.vocab import TokenLayout
from model.vq import build_vq


def bf16_autocast(device: torch.device | str, enabled: bool = True) -> AbstractContextManager:
    """bf16 autocast on CPU, or on CUDA when the GPU supports bf16; a no-op context otherwise."""
    kind = torch.device(device).type
    ok = enabled and (kind == "cpu" or (kind == "cuda" and torch.cuda.is_bf16_supported()))
    return torch.autocast(kind if kind in ("cpu", "cuda") else "cpu", dtype=torch.bfloat16, enabled=ok)


class VLAModel(PretrainedMixin, nn.Module):
    """The UP-VLA model (see the module docstring).

    Trained: backbone, projector, action head and, unless `freeze_vision`, the vision tower.
    Frozen: the VQ tokenizer (training reads precomputed codes; inference encodes/decodes with it).
    """

    def __init__(self, cfg: ModelConfig, eos_id: int | None = None):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.layout = TokenLayout.from_config(cfg, eos_id)
        self.backbone = build_phi(cfg, self.layout.vocab_size)
        self.vision = build_vision_tower(cfg).requires_grad_(not cfg.freeze_vision)
        self.projector = nn.Sequential(nn.Linear(cfg.vision_hidden_size, cfg.hidden_size), nn.GELU(),
                                       nn.Linear(cfg.hidden_size, cfg.hidden_size))
        self.vq = build_vq(cfg.vq).requires_grad_(False)
        self.action_head = build_action_head(cfg)
        self.binner = ActionBinner(cfg.action_bins)
        self.proprio = ProprioEncoder(cfg.hidden_size, gripper=cfg.proprio_gripper) if cfg.proprio else None
        # per-dimension pose statistics of the training data (`normalize_actions`); identity until
        # `set_action_stats`, saved with the weights so inference de-standardises with the same values
        self.register_buffer("action_mean", torch.zeros(cfg.action_dim - 1))
        self.register_buffer("action_std", torch.ones(cfg.action_dim - 1))
        self.text_tokenizer = None  # a transformers tokenizer; saved with the checkpoint when set

    def enable_gradient_checkpointing(self) -> None:
        """Recompute backbone (and trainable vision) layer activations in backward: less memory, ~30 % more time."""
        kwargs = {"use_reentrant": False}
        self.backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        if not self.cfg.freeze_vision:
            self.vision.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)

    # ----------------------------------------------------------------- pieces

    def set_proprio_stats(self, mean: Tensor, std: Tensor) -> None:
        """Store the training data's per-feature proprioception mean and std (`model.proprio`; (18,) each)."""
        if self.proprio is None:
            raise ValueError("set_proprio_stats: the model reads no proprioception (model.proprio is false)")
        self.proprio.set_stats(mean, std)

    def set_action_stats(self, mean: Tensor, std: Tensor) -> None:
        """Store the training data's per-dimension pose mean and std ((action_dim - 1,) each, std > 0)."""
        shape = self.action_mean.shape
        if mean.shape != shape or std.shape != shape:
            raise ValueError(f"action stats: expected mean and std of shape {tuple(shape)}, got "
                             f"{tuple(mean.shape)} and {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError(f"action stats: need finite values and std > 0, got mean {mean.tolist()}, "
                             f"std {std.tolist()}")
        with torch.no_grad():
            self.action_mean.copy_(mean)
            self.action_std.copy_(std)

    def _pose_stats(self) -> dict[str, Tensor]:
        if not self.cfg.normalize_actions:
            return {}
        return {"pose_mean": self.action_mean.float(), "pose_std": self.action_std.float()}

    def head_actions(self, states: Tensor) -> Tensor:
        """(B, k, D) action-query states -> (B, k, A) raw MAP outputs with the pose in action units."""
        raw = self.action_head(states).float()
        if not self.cfg.normalize_actions:
            return raw
        pose = raw[..., :-1] * self.action_std.float() + self.action_mean.float()
        return torch.cat([pose, raw[..., -1:]], dim=-1)

    def embed(self, ids: Tensor) -> Tensor:
        """(B, n) unified ids -> (B, n, D) input embeddings."""
        return self.backbone.model.embed_tokens(ids)

    def encode_images(self, pixel_values: Tensor) -> Tensor:
        """(B, 3, s, s) CLIP-normalised images -> (B, M, D) continuous image tokens (CLS dropped)."""
        dtype = self.vision.embeddings.patch_embedding.weight.dtype  # bf16 when the model was cast for inference
        feats = self.vision(pixel_values=pixel_values.to(dtype)).last_hidden_state[:, 1:]
        return self.projector(feats)

    def logits(self, hidden: Tensor, rows: slice) -> Tensor:
        """LM-head logits restricted to a vocabulary slice: (..., D) -> (..., rows)."""
        head = self.backbone.lm_head
        return F.linear(hidden, head.weight[rows], None if head.bias is None else head.bias[rows])

    def run_backbone(self, seq: PackedSequence) -> Tensor:
        """(B, L, D) final-layer (post-norm) hidden states of a packed sequence."""
        if seq.length > self.cfg.max_position_embeddings:
            raise ValueError(f"sequence of {seq.length} columns exceeds model.max_position_embeddings "
                             f"({self.cfg.max_position_embeddings}); truncate texts to max_text_len")
        out = self.backbone.model(inputs_embeds=seq.embeds, attention_mask=seq.attention_mask(),
                                  position_ids=seq.position_ids(), use_cache=False)
        return out.last_hidden_state

    def _tokens(self, name: str, ids: Tensor, bidirectional: bool = False) -> Segment:
        return Segment(name, self.embed(ids), ids != self.layout.pad_id, bidirectional)

    def _image_block(self, name: str, tokens: Tensor) -> Segment:
        b = tokens.shape[0]
        soi = self.embed(tokens.new_full((b, 1), self.layout.soi_id, dtype=torch.long))
        eoi = self.embed(tokens.new_full((b, 1), self.layout.eoi_id, dtype=torch.long))
        embeds = torch.cat([soi, tokens.to(soi.dtype), eoi], dim=1)
        return Segment(name, embeds, torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device), True)

    def _task_token(self, token_id: int, batch: int, device: torch.device) -> Segment:
        return self._tokens("task", torch.full((batch, 1), token_id, dtype=torch.long, device=device))

    # ----------------------------------------------------------------- sequences

    def robot_sequence(self, batch: RobotBatch, action_ids: Tensor | None) -> PackedSequence:
        """Pack a PRE/ACT sequence; `action_ids` (B, n) are appended after the image block (None: no actions)."""
        codes = batch.current_codes
        self._check_codes(codes)
        if self.cfg.prompt_layout == "reference":
            return self._reference_sequence(batch, action_ids)
        segments = [self._task_token(self.layout.pre_id, codes.shape[0], codes.device)]
        if batch.conditioned:
            segments.append(self._image_block("scene", self.encode_images(batch.scene_pixels)))
            segments.append(self._tokens("description", batch.description_ids))
        segments.append(self._tokens("instruction", batch.instruction_ids))
        segments.append(self._image_block("image", self.embed(codes + self.layout.code_offset)))
        if action_ids is not None:
            segments.append(self._action_segment(batch, action_ids))
        return pack(segments)

    def _reference_sequence(self, batch: RobotBatch, action_ids: Tensor | None) -> PackedSequence:
        """The authors' PRE/ACT sequence (`model.prompt_layout: reference`, rules in model/sequences.py).

        [PAD]s <|pre|> bos instruction eos | <|soi|> codes <|eoi|> | actions
        """
        if batch.conditioned:
            raise ValueError("RobotBatch: the `reference` prompt layout has no MMU-conditioned prefix (scene_pixels "
                             "and description_ids must be None)")
        slot = reference_text_slot(batch.instruction_ids, self.layout.pad_id, width=self.cfg.max_text_len + 1,
                                   task_id=self.layout.pre_id, bos_id=self.layout.eos_id, eos_id=self.layout.eos_id)
        segments = [self._tokens("text", slot),
                    self._image_block("image", self.embed(batch.current_codes + self.layout.code_offset))]
        if action_ids is not None:
            segments.append(self._action_segment(batch, action_ids))
        return pack(segments, reference=True)

    def _action_segment(self, batch: RobotBatch, action_ids: Tensor) -> Segment:
        """The tokens after the image block; with `model.proprio` the state embedding is added to each <|act|>."""
        segment = self._tokens("actions", action_ids)
        if self.proprio is None:
            return segment
        if batch.robot_obs is None:
            raise ValueError("RobotBatch.robot_obs: required for actions, the model reads proprioception "
                             "(model.proprio = true)")
        if batch.robot_obs.shape[0] != action_ids.shape[0]:
            raise ValueError(f"RobotBatch.robot_obs: {batch.robot_obs.shape[0]} rows for a batch of "
                             f"{action_ids.shape[0]}")
        state = self.proprio(batch.robot_obs)[:, None]
        is_query = (action_ids == self.layout.act_id)[..., None]
        segment.embeds = segment.embeds + is_query * state.to(segment.embeds.dtype)
        return segment

    def mmu_sequence(self, pixel_values: Tensor, text_ids: Tensor) -> PackedSequence:
        """Pack an understanding sequence: <|mmu|>, the CLIP image block, the right-padded text."""
        return pack([self._task_token(self.layout.mmu_id, text_ids.shape[0], text_ids.device),
                     self._image_block("image", self.encode_images(pixel_values)),
                     self._tokens("text", text_ids)])

    def action_query_ids(self, batch_size: int, device: torch.device, bins: Tensor | None = None) -> Tensor:
        """(B, n) ids after the image block: k queries (MAP), or <|act|> + all bins but the last (RT-2)."""
        act = torch.full((batch_size, 1), self.layout.act_id, dtype=torch.long, device=device)
        if self.action_head is not None:
            return act.expand(-1, self.cfg.chunk_len)
        if bins is None:
            return act
        return torch.cat([act, bins.flatten(1)[:, :-1] + self.layout.bin_offset], dim=1)

    # ----------------------------------------------------------------- training

    def forward(self, batch: TrainBatch, weights: LossWeights) -> tuple[Tensor, dict[str, Tensor]]:
        """λ-weighted total loss of one micro-batch; terms with λ = 0 are skipped entirely.

        Returns:
            loss: scalar to backpropagate.
            metrics: detached 0-dim tensors (`loss`, `mmu`, `pre`, `act`, parts), call `.item()` when logging
            (kept as tensors so a GPU step does not synchronise every iteration).
        """
        terms: dict[str, Tensor] = {}
        metrics: dict[str, Tensor] = {}
        if weights.mmu > 0:
            if batch.mmu is None:
                raise ValueError("TrainBatch.mmu: required when lambda_mmu > 0")
            terms["mmu"] = self.understanding_loss(batch.mmu)
        if weights.pre > 0 or weights.act > 0:
            if batch.robot is None:
                raise ValueError("TrainBatch.robot: required when lambda_pre or lambda_act > 0")
            robot_terms, parts = self.robot_losses(batch.robot, weights)
            terms.update(robot_terms)
            metrics.update(parts)
        loss = sum(getattr(weights, name) * value for name, value in terms.items())
        metrics.update({name: value.detach() for name, value in terms.items()}, loss=loss.detach())
        return loss, metrics

    def understanding_loss(self, batch: MMUBatch) -> Tensor:
        """L_MMU on a right-padded understanding batch."""
        seq = self.mmu_sequence(batch.pixel_values, batch.input_ids)
        text = seq.spans["text"]
        valid = seq.valid[:, text]
        if (valid[:, 1:] & ~valid[:, :-1]).any():
            raise ValueError("MMUBatch.input_ids: text must be right-padded ([PAD] only at the end)")
        if batch.labels.shape != batch.input_ids.shape:
            raise ValueError(f"MMUBatch.labels: shape {tuple(batch.labels.shape)} differs from input_ids "
                             f"{tuple(batch.input_ids.shape)}")
        answer = batch.labels != IGNORE
        if not answer.any():
            raise ValueError("MMUBatch.labels: no answer tokens to train on")
        hidden = self.run_backbone(seq)
        before = hidden[:, text.start - 1: text.stop - 1]  # the column before each text token predicts it
        return understanding_loss(self.logits(before[answer], self.layout.text_slice), batch.labels[answer])

    def robot_losses(self, batch: RobotBatch, weights: LossWeights) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """L_PRE and/or L_ACT (by λ) from one forward of the PRE/ACT sequence."""
        with_actions = weights.act > 0
        if weights.pre > 0 and batch.future_codes is None:
            raise ValueError("RobotBatch.future_codes: required when lambda_pre > 0")
        if with_actions and batch.actions is None:
            raise ValueError("RobotBatch.actions: required when lambda_act > 0")
        self._check_targets(batch, weights)
        bins = self.binner.to_bins(batch.actions) if with_actions and self.action_head is None else None
        b, device = batch.current_codes.shape[0], batch.current_codes.device
        ids = self.action_query_ids(b, device, bins) if with_actions else None
        seq = self.robot_sequence(batch, ids)
        hidden = self.run_backbone(seq)
        terms, parts = {}, {}
        if weights.pre > 0:
            image = hidden[:, seq.spans["image"]][:, 1:-1]  # code positions, without soi/eoi
            terms["pre"] = future_image_loss(self.logits(image, self.layout.code_slice), batch.future_codes)
        if with_actions:
            states = hidden[:, seq.spans["actions"]]
            if self.action_head is not None:
                raw = self.action_head(states)
                terms["act"], parts = (reference_action_loss(raw, batch.actions) if self.cfg.map_variant == "reference"
                                       else action_loss(raw, batch.actions, batch.action_mask, **self._pose_stats()))
            else:
                mask = None if batch.action_mask is None else batch.action_mask.repeat_interleave(
                    self.cfg.action_dim, dim=1)
                terms["act"] = action_token_loss(self.logits(states, self.layout.bin_slice), bins.flatten(1), mask)
        return terms, parts

    def _check_codes(self, codes: Tensor) -> None:
        expected = self.cfg.num_views * self.cfg.vq.tokens_per_image
        if codes.dim() != 2 or codes.shape[1] != expected:
            raise ValueError(f"RobotBatch.current_codes: expected (B, {expected}), got {tuple(codes.shape)}")
        low, high = torch.aminmax(codes)
        if low < 0 or high >= self.cfg.vq.codebook_size:  # an offset code would silently become another token
            raise ValueError(f"RobotBatch.current_codes: must lie in [0, {self.cfg.vq.codebook_size}), "
                             f"got [{low.item()}, {high.item()}] (raw codebook indices, not vocabulary ids)")

    def _check_targets(self, batch: RobotBatch, weights: LossWeights) -> None:
        b, n = batch.current_codes.shape[0], self.cfg.num_views * self.cfg.vq.tokens_per_image
        if weights.pre > 0 and batch.future_codes.shape != (b, n):
            raise ValueError(f"RobotBatch.future_codes: expected {(b, n)}, got {tuple(batch.future_codes.shape)}")
        chunk = (b, self.cfg.chunk_len, self.cfg.action_dim)
        if weights.act > 0 and batch.actions.shape != chunk:
            raise ValueError(f"RobotBatch.actions: expected (B, chunk_len, action_dim) = {chunk}, "
                             f"got {tuple(batch.actions.shape)}")

    # ----------------------------------------------------------------- inference

    @torch.no_grad()
    def predict(self, inputs: RobotBatch, *, decode_images: bool = False, bf16: bool = True,
                with_actions: bool = True) -> Prediction:
        """One replan for B environments: the action chunk and the predicted future-frame codes.

        Args:
            inputs: instruction, current codes, (for the MMU-conditioned prompt) scene pixels + description,
                and (with `model.proprio`) robot_obs.
            decode_images: also decode the predicted codes to pixels (visualisation only; costs a VQ decode).
            bf16: run under bf16 autocast where supported.
            with_actions: False = the future frame only (`actions` None): the image rows never see the
                action tokens, so the codes are those of the full forward.
        """
        device = inputs.current_codes.device
        with bf16_autocast(device, bf16):
            if not with_actions:
                seq = self.robot_sequence(inputs, None)
                hidden, actions = self.run_backbone(seq), None
            elif self.action_head is not None:
                seq = self.robot_sequence(inputs, self.action_query_ids(inputs.current_codes.shape[0], device))
                hidden = self.run_backbone(seq)
                actions = actions_from_outputs(self.head_actions(hidden[:, seq.spans["actions"]]),
                                               clamp_pose=self.cfg.map_variant != "reference")
            else:
                bins, hidden, seq = decode_action_bins(self, inputs)
                actions = self.binner.from_bins(bins.view(bins.shape[0], self.cfg.chunk_len, self.cfg.action_dim))
            image = hidden[:, seq.spans["image"]][:, 1:-1]
            codes = self.logits(image, self.layout.code_slice).argmax(dim=-1)
        images = self.decode_codes(codes) if decode_images else None
        return Prediction(actions=None if actions is None else actions.float(), future_codes=codes,
                          future_images=images)

    @torch.no_grad()
    def decode_codes(self, codes: Tensor) -> Tensor:
        """(B, V*N) codes -> (B, V, 3, S, S) images in [-1, 1] through the frozen VQ decoder."""
        b, v = codes.shape[0], self.cfg.num_views
        images = self.vq.decode(codes.reshape(b * v, -1))
        return images.view(b, v, *images.shape[1:])

    @torch.no_grad()
    def generate_description(self, pixel_values: Tensor, prompt_ids: Tensor, *, max_new_tokens: int | None = None,
                             use_cache: bool = True, bf16: bool = True) -> Tensor:
        """Greedy scene description through the MMU path (once per subtask at inference).

        Args:
            pixel_values: (B, 3, s, s) CLIP-normalised current static frames.
            prompt_ids: (B, Lp) text prompt (e.g. "Describe the scene."), [PAD]-padded on the right.
            max_new_tokens: generation budget; default `max_description_len`.
            use_cache: decode with a KV cache (the no-cache path exists to test it).
            bf16: run under bf16 autocast where supported.

        Returns:
            (B, n) long text ids without eos, [PAD]-padded: ready as `RobotBatch.description_ids`.
        """
        budget = self.cfg.max_description_len if max_new_tokens is None else max_new_tokens
        with bf16_autocast(pixel_values.device, bf16):
            return generate_text(self, pixel_values, prompt_ids, budget, use_cache=use_cache)

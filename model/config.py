"""Model configuration dataclasses: `ModelConfig` (backbone, vision tower, heads) and `VQConfig`.

Pure dataclasses, no I/O. `components.core.config` builds them from params.yaml (`model:` section)
and checks types and the `ge`/`gt`/`le`/`lt` bounds in each field's metadata; `validate()`
raises ``ValueError("field: reason")`` for rules spanning several fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def _f(**bounds: float) -> object:
    return field(metadata=bounds)


@dataclass(frozen=True)
class VQConfig:
    """VQ image tokenizer: conv encoder, lookup-free quantiser, conv decoder (model/vq_tokenizer.py, magvit2.py)."""

    # `compact`: our small MagVIT-v2-style tokenizer (trained by the `tokenizer` stage on CPU); `magvitv2`: Show-o's
    # published MagVIT-v2 architecture (its `magvitv2` weights load into it), sized by the four per-level lists below
    arch: Literal["compact", "magvitv2"]
    # side of the square image fed to the tokenizer, px
    image_size: int = _f(ge=8)
    # spatial downsampling factor (a power of two); tokens per image = (image_size / downsample)^2
    downsample: int = _f(ge=2)
    # lookup-free quantiser code dimension; the codebook has 2**codebook_bits codes
    codebook_bits: int = _f(ge=1, le=18)
    # channels of the first conv stage (x2, then x4 at the lower resolutions)
    base_channels: int = _f(ge=1)
    # residual blocks per resolution (`compact`); null for `magvitv2` (its per-level lists below)
    num_res_blocks: int | None = _f(ge=0)
    # `magvitv2`: encoder channels per level as multiples of base_channels (published: [1, 2, 2, 4, 4]); null for
    # `compact`
    channel_mult: tuple[int, ...] | None
    # `magvitv2`: encoder residual blocks per level (published: [4, 3, 4, 3, 4]); null for `compact`
    res_blocks: tuple[int, ...] | None
    # `magvitv2`: decoder channels per level as multiples of base_channels, level 0 = full resolution (published:
    # [1, 1, 2, 2, 4]); null for `compact`
    decoder_channel_mult: tuple[int, ...] | None
    # `magvitv2`: decoder residual blocks per level (published: [4, 4, 3, 4, 3]); null for `compact`
    decoder_res_blocks: tuple[int, ...] | None

    @property
    def codebook_size(self) -> int:
        """Number of discrete codes."""
        return 2**self.codebook_bits

    @property
    def tokens_per_image(self) -> int:
        """Codes per image (the side is image_size / downsample)."""
        return (self.image_size // self.downsample) ** 2

    def validate(self) -> None:
        """Cross-field checks."""
        if self.downsample & (self.downsample - 1):
            raise ValueError(f"downsample: must be a power of two, got {self.downsample}")
        if self.image_size % self.downsample:
            raise ValueError(f"image_size: must be divisible by downsample ({self.downsample}), got {self.image_size}")
        levels = {"channel_mult": self.channel_mult, "res_blocks": self.res_blocks,
                  "decoder_channel_mult": self.decoder_channel_mult, "decoder_res_blocks": self.decoder_res_blocks}
        if self.arch == "compact":
            if self.num_res_blocks is None:
                raise ValueError("num_res_blocks: required for arch compact")
            for name, value in levels.items():
                if value is not None:
                    raise ValueError(f"{name}: only for arch magvitv2, must be null for compact, got {list(value)}")
            return
        if self.num_res_blocks is not None:
            raise ValueError(f"num_res_blocks: only for arch compact (magvitv2 counts blocks per level in res_blocks), "
                             f"must be null, got {self.num_res_blocks}")
        for name, value in levels.items():
            if value is None:
                raise ValueError(f"{name}: required for arch magvitv2")
            if len(value) != len(self.channel_mult):
                raise ValueError(f"{name}: one entry per level, {len(self.channel_mult)} as channel_mult, "
                                 f"got {list(value)}")
            if min(value) < (1 if "mult" in name else 0):
                raise ValueError(f"{name}: entries must be positive, got {list(value)}")
        halvings = len(self.channel_mult) - 1
        if 2**halvings != self.downsample:
            raise ValueError(f"downsample: {len(self.channel_mult)} levels halve the image {halvings} times, so "
                             f"downsample must be {2**halvings}")
        for name in ("channel_mult", "decoder_channel_mult"):
            channels = [self.base_channels * m for m in levels[name]]
            if any(c % 32 for c in channels):  # every norm is GroupNorm(32)
                raise ValueError(f"{name}: base_channels x each entry must be a multiple of 32 (GroupNorm(32)), "
                                 f"got channels {channels}")


# the VQConfig fields that select our compact tokenizer, for folders written before `arch` existed
COMPACT_VQ = {"arch": "compact", "channel_mult": None, "res_blocks": None, "decoder_channel_mult": None,
              "decoder_res_blocks": None}


@dataclass(frozen=True)
class ModelConfig:
    """UP-VLA: Phi backbone + CLIP vision tower + VQ codes + MAP action head (or RT-2 action tokens)."""

    # local folder of a unified LLM, loaded when backbone_init is `unified`: the published Show-o folder
    # (show-o-w-clip-vit-512x512, as is, its CLIP projector included) or a transformers Phi folder; null = random init
    # at the sizes below
    backbone_path: str | None
    # local transformers Phi folder of a plain LLM (Phi-1.5), loaded when backbone_init is `llm`; null = random init at
    # the sizes below
    llm_path: str | None
    # `unified`: start from backbone_path (a Show-o-style VLM, the paper); `llm`: from llm_path (LLM only, no MMU: the
    # phi_no_mmu baseline)
    backbone_init: Literal["unified", "llm"]
    # LayerNorm over each head's queries and keys in every attention layer (Show-o's Phi has it; Phi-1.5 has not)
    qk_layernorm: bool
    # local transformers CLIP vision folder to load; null = random init at the sizes below
    vision_path: str | None
    # text tokens of the tokenizer, ids [0, text_vocab_size) (Phi-1.5: 50295), as many as the text tokenizer has;
    # special tokens, VQ codes and action bins come after (model/vocab.py)
    text_vocab_size: int = _f(ge=1)
    # backbone width, channels
    hidden_size: int = _f(ge=8)
    # backbone transformer layers
    num_layers: int = _f(ge=1)
    # backbone attention heads (head dim = hidden_size / num_heads)
    num_heads: int = _f(ge=1)
    # backbone MLP width, channels
    intermediate_size: int = _f(ge=1)
    # longest sequence the backbone's rotary tables cover, tokens; the longest robot sequence must fit (checked at load)
    max_position_embeddings: int = _f(ge=16)
    # fraction of each head's dimension that is rotated (Phi: 0.5)
    partial_rotary_factor: float = _f(gt=0.0, le=1.0)
    # CLIP vision tower width, channels
    vision_hidden_size: int = _f(ge=8)
    # CLIP vision tower layers (of the checkpoint; the ones after vision_feature_layer are dropped)
    vision_layers: int = _f(ge=1)
    # CLIP vision tower heads
    vision_heads: int = _f(ge=1)
    # CLIP input side, px
    vision_image_size: int = _f(ge=8)
    # CLIP patch side, px
    vision_patch_size: int = _f(ge=1)
    # hidden layer whose patch features feed the projector, counted from the end (LLaVA/Show-o: -2);
    # the layers after it are dropped from the tower, so every kept parameter is used
    vision_feature_layer: int = _f(le=-1)
    # freeze the vision tower (the paper does); the projector always trains
    freeze_vision: bool
    # VQ image tokenizer
    vq: VQConfig
    # camera views whose codes form the image block: 1 = static, 2 = static + gripper (both in one soi/eoi block, as the
    # reference's num_view: 2)
    num_views: int = _f(ge=1, le=2)
    # actions predicted per forward (k action queries), control steps; the paper: 10
    chunk_len: int = _f(ge=1)
    # how far ahead the predicted future frame is, control steps; the paper: 10
    delta_t: int = _f(ge=1)
    # action dimension: 6-D relative pose + gripper
    action_dim: int = _f(ge=2)
    # `map`: MAP head regressing a chunk (UP-VLA); `tokens`: discretised actions decoded autoregressively as tokens
    # (RT-2)
    action_head: Literal["map", "tokens"]
    # bins per action dimension for the `tokens` head
    action_bins: int = _f(ge=2)
    # attention heads of the MAP action head's latent query (the reference: 8)
    map_heads: int = _f(ge=1)
    # `ours`: the MAP head of model/heads.py (pre-split SwiGLU, torch RMSNorm, biased attention projections, gripper
    # logit); `reference`: the authors' MAPBlock computed exactly (value-then-gate SwishGLU, their RMSNorm, unbiased
    # q/kv, gripper regressed), so UP-VLA-Calvin's action head loads unchanged
    map_variant: Literal["ours", "reference"]
    # `map` head: regress the pose standardised per dimension with the training data's mean and std (kept in the
    # checkpoint); false = the reference's raw CALVIN rel_actions (std 0.13-0.31), whose MSE is then too small beside
    # the gripper BCE and the CE terms for the backbone to learn the pose
    normalize_actions: bool
    # the action queries also read the robot's proprioception (CALVIN robot_obs through a small MLP, added to
    # each query's embedding; model/proprio.py). UP-VLA has none
    proprio: bool
    # with `proprio`: the state read includes the gripper (its opening width and last command); false = the arm's
    # pose and joints only, so the action queries cannot copy the gripper's state into the gripper action
    proprio_gripper: bool
    # `packed`: our PRE/ACT sequence (no pads in the positions, image rows never see the action queries); `reference`:
    # the authors' layout exactly: a left-padded text slot of max_text_len + 1 tokens ([PAD]s, <|pre|>, bos,
    # instruction, eos) whose pads still take positions, and image rows that also see the action queries
    prompt_layout: Literal["packed", "reference"]
    # longest instruction, text tokens
    max_text_len: int = _f(ge=1)
    # longest scene description (MMU-conditioned prompt), text tokens; also the generation budget
    max_description_len: int = _f(ge=1)

    def validate(self) -> None:
        """Cross-field checks."""
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size: must be divisible by num_heads ({self.num_heads})")
        if self.vision_hidden_size % self.vision_heads:
            raise ValueError(f"vision_hidden_size: must be divisible by vision_heads ({self.vision_heads})")
        if self.vision_image_size % self.vision_patch_size:
            raise ValueError("vision_image_size: must be divisible by vision_patch_size")
        if -self.vision_feature_layer > self.vision_layers:
            raise ValueError(f"vision_feature_layer: the tower has only {self.vision_layers} layers")
        if self.hidden_size % self.map_heads:
            raise ValueError(f"map_heads: must divide hidden_size ({self.hidden_size})")
        if self.prompt_layout == "reference" and self.action_head != "map":
            raise ValueError("prompt_layout: the `reference` layout ends in MAP action queries; action_head must be "
                             "`map`")
        if not self.proprio_gripper and not self.proprio:
            raise ValueError("proprio_gripper: false leaves the gripper out of proprioception, but model.proprio is "
                             "false (no proprioception is read); set model.proprio: true or leave proprio_gripper true")
        if self.map_variant == "reference" and self.action_head != "map":
            raise ValueError("map_variant: `reference` is a MAP head; action_head must be `map`")
        if self.map_variant == "reference" and self.normalize_actions:
            raise ValueError("normalize_actions: must be false with map_variant `reference` (the authors' head "
                             "regresses raw CALVIN rel_actions)")
        if self.robot_sequence_len > self.max_position_embeddings:
            raise ValueError(f"max_position_embeddings: the longest robot sequence needs {self.robot_sequence_len} "
                             f"positions (views, text lengths, chunk), got {self.max_position_embeddings}")

    @property
    def vision_tokens(self) -> int:
        """Continuous image tokens per CLIP image (patches, CLS dropped)."""
        return (self.vision_image_size // self.vision_patch_size) ** 2

    @property
    def action_tokens_len(self) -> int:
        """Positions after the image block: k queries (`map`) or <|act|> + 7k-1 action tokens (`tokens`)."""
        return self.chunk_len if self.action_head == "map" else self.chunk_len * self.action_dim

    @property
    def robot_sequence_len(self) -> int:
        """Longest PRE/ACT sequence: task token, CLIP block, description, instruction, VQ block, actions.

        The `reference` layout has no CLIP block or description: its text slot (task token, bos, instruction, eos,
        left-padded) is always max_text_len + 1 columns.
        """
        vq_block = self.num_views * self.vq.tokens_per_image + 2
        if self.prompt_layout == "reference":
            return self.max_text_len + 1 + vq_block + self.action_tokens_len
        clip_block = self.vision_tokens + 2
        return (1 + clip_block + self.max_description_len + self.max_text_len + vq_block
                + self.action_tokens_len)

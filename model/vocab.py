"""The unified vocabulary: text tokens, special tokens, VQ codes and action bins in one id space.

Id layout (T = `text_vocab_size`, C = `vq.codebook_size`, K = `action_bins`). The special-token block
and the code offset follow Show-o's order, so an exported Show-o LLM (vocab T + 11 + C = 58498 at
paper scale) lines up row for row; the RT-2 action bins are appended after it.

| ids                        | tokens                                                             |
|----------------------------|--------------------------------------------------------------------|
| 0 .. T-1                   | text tokens of the text tokenizer; `<|endoftext|>` is bos and eos  |
| T + 0                      | `[PAD]`: sees nothing, seen by nothing                             |
| T + 1, T + 2               | `<|soi|>`, `<|eoi|>`: open/close an image block (CLIP or VQ)       |
| T + 3, T + 4               | `<|sov|>`, `<|eov|>`: reserved (Show-o video), unused              |
| T + 5                      | `<|pre|>`: task token of prediction/action sequences (Show-o t2i)  |
| T + 6                      | `<|mmu|>`: task token of understanding sequences                   |
| T + 7, T + 8               | `<|t2v|>`, `<|v2v|>`: reserved (Show-o), unused                    |
| T + 9                      | `<|act|>`: action query (Show-o's `<|lvg|>`)                       |
| T + 10 .. T + 10 + C - 1   | VQ code c -> T + 10 + c                                            |
| T + 10 + C                 | `<|mask|>`: reserved (Show-o's mask token), unused                 |
| T + 11 + C .. + K - 1      | action bin b -> T + 11 + C + b (RT-2 head)                         |

At paper scale (T=50295, C=8192, K=256): PAD 50295, codes 50305..58496, bins 58498..58753, 58754 rows.

The text tokenizer: Phi-1.5's, loaded from a local folder at paper scale; on the CPU default a small
byte-level BPE trained on the project's own texts (`build_text_tokenizer`), saved in checkpoint folders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from model.config import ModelConfig

SPECIAL_TOKENS = ("[PAD]", "<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|pre|>", "<|mmu|>", "<|t2v|>", "<|v2v|>",
                  "<|act|>")
EOS_TOKEN = "<|endoftext|>"


@dataclass(frozen=True)
class TokenLayout:
    """Where every kind of token lives in the unified vocabulary (see the module table)."""

    text_vocab_size: int
    codebook_size: int
    action_bins: int
    # id of `<|endoftext|>` in the text tokenizer (Phi-1.5: 50256)
    eos_id: int

    @classmethod
    def from_config(cls, cfg: ModelConfig, eos_id: int | None = None) -> TokenLayout:
        """The layout of a model config; `eos_id` defaults to the last text id (where our BPE puts it)."""
        eos = cfg.text_vocab_size - 1 if eos_id is None else eos_id
        if not 0 <= eos < cfg.text_vocab_size:
            raise ValueError(f"eos_id: {eos} is outside the text vocabulary [0, {cfg.text_vocab_size})")
        return cls(cfg.text_vocab_size, cfg.vq.codebook_size, cfg.action_bins, eos)

    def special(self, name: str) -> int:
        """Id of a special token, e.g. ``special("<|soi|>")``."""
        return self.text_vocab_size + SPECIAL_TOKENS.index(name)

    @property
    def pad_id(self) -> int:
        """`[PAD]`."""
        return self.special("[PAD]")

    @property
    def soi_id(self) -> int:
        """`<|soi|>`."""
        return self.special("<|soi|>")

    @property
    def eoi_id(self) -> int:
        """`<|eoi|>`."""
        return self.special("<|eoi|>")

    @property
    def pre_id(self) -> int:
        """`<|pre|>`."""
        return self.special("<|pre|>")

    @property
    def mmu_id(self) -> int:
        """`<|mmu|>`."""
        return self.special("<|mmu|>")

    @property
    def act_id(self) -> int:
        """`<|act|>`."""
        return self.special("<|act|>")

    @property
    def code_offset(self) -> int:
        """Id of VQ code 0."""
        return self.text_vocab_size + len(SPECIAL_TOKENS)

    @property
    def mask_id(self) -> int:
        """Show-o's mask token (reserved)."""
        return self.code_offset + self.codebook_size

    @property
    def bin_offset(self) -> int:
        """Id of action bin 0."""
        return self.mask_id + 1

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table and the LM head."""
        return self.bin_offset + self.action_bins

    @property
    def text_slice(self) -> slice:
        """LM-head rows of text tokens (understanding logits)."""
        return slice(0, self.text_vocab_size)

    @property
    def code_slice(self) -> slice:
        """LM-head rows of VQ codes (future-image logits)."""
        return slice(self.code_offset, self.code_offset + self.codebook_size)

    @property
    def bin_slice(self) -> slice:
        """LM-head rows of action bins (RT-2 logits)."""
        return slice(self.bin_offset, self.bin_offset + self.action_bins)


def build_text_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE text tokenizer of exactly `vocab_size` ids on the project's texts.

    Byte-level, so any string encodes (unseen words split into byte tokens). `<|endoftext|>` (bos and
    eos, as in Phi) gets the last id. When the texts run out of merges before `vocab_size`, the gap is
    filled with `<|reserved_i|>` tokens (never produced by encoding), so the id layout stays fixed.

    Args:
        texts: the instructions, scene descriptions and VQA turns the model will read and write.
        vocab_size: `model.text_vocab_size`; at least 257 (256 bytes + eos).

    Returns:
        A `transformers.PreTrainedTokenizerFast` with `eos_token` = `bos_token` = `<|endoftext|>`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257:
        raise ValueError(f"text_vocab_size: a byte-level tokenizer needs at least 257 ids, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    reserved = vocab_size - 1 - tok.get_vocab_size()
    tok.add_special_tokens([f"<|reserved_{i}|>" for i in range(reserved)] + [EOS_TOKEN])
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN)
    assert len(out) == vocab_size and out.convert_tokens_to_ids(EOS_TOKEN) == vocab_size - 1
    return out


def load_text_tokenizer(folder: str | Path, text_vocab_size: int):
    """Load a text tokenizer folder (ours or Phi-1.5's) and check it matches `model.text_vocab_size`."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{folder}: no tokenizer.json (expected a saved transformers fast tokenizer)")
    tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    if len(tok) != text_vocab_size:
        raise ValueError(f"model.text_vocab_size: {text_vocab_size}, but the tokenizer in {folder} has {len(tok)} ids")
    if tok.eos_token_id is None:
        raise ValueError(f"{folder}: the tokenizer has no eos token")
    return tok

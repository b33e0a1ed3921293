"""The unified id layout (Show-o compatible at paper scale) and the small text tokenizer."""

from __future__ import annotations

import pytest

from components.core.config import load_config
from model.vocab import TokenLayout, build_text_tokenizer, load_text_tokenizer
from tests.conftest import PROJECT_ROOT

TEXTS = ["open the drawer", "pull the handle to open the drawer", "push the red block to the left",
         "Q: what is on the table? A: a red block and a blue block"]


def test_paper_layout_matches_show_o_ids():
    layout = TokenLayout.from_config(load_config(PROJECT_ROOT / "params.yaml", profile="paper").model, eos_id=50256)
    assert layout.pad_id == 50295
    assert (layout.soi_id, layout.eoi_id, layout.pre_id, layout.mmu_id, layout.act_id) == (
        50296, 50297, 50300, 50301, 50304)
    assert (layout.code_slice.start, layout.code_slice.stop) == (50305, 58497)
    assert layout.mask_id == 58497  # Show-o's vocab_size - 1: a Show-o LLM lines up row for row
    assert (layout.bin_slice.start, layout.bin_slice.stop, layout.vocab_size) == (58498, 58754, 58754)


def test_default_layout_is_contiguous():
    layout = TokenLayout.from_config(load_config(PROJECT_ROOT / "params.yaml").model)
    spans = [layout.text_slice, slice(layout.pad_id, layout.code_offset), layout.code_slice,
             slice(layout.mask_id, layout.bin_offset), layout.bin_slice]
    assert spans[0].start == 0 and spans[-1].stop == layout.vocab_size
    assert all(a.stop == b.start for a, b in zip(spans, spans[1:], strict=False))
    assert layout.eos_id == layout.text_vocab_size - 1
    with pytest.raises(ValueError, match="eos_id: 5000 is outside"):
        TokenLayout.from_config(load_config(PROJECT_ROOT / "params.yaml").model, eos_id=5000)


def test_built_tokenizer_has_exact_size_and_eos_last(tmp_path):
    tok = build_text_tokenizer(TEXTS, 400)
    assert len(tok) == 400 and tok.eos_token_id == tok.bos_token_id == 399
    for text in TEXTS + ["an unseen zebra, 42!"]:  # byte-level: anything encodes and decodes back
        ids = tok(text)["input_ids"]
        assert max(ids) < 399 and tok.decode(ids) == text
    assert len(tok("open the drawer")["input_ids"]) <= 3  # merges learned from the corpus
    tok.save_pretrained(tmp_path / "tok")
    again = load_text_tokenizer(tmp_path / "tok", 400)
    assert again("push the red block")["input_ids"] == tok("push the red block")["input_ids"]


def test_tokenizer_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="text_vocab_size: a byte-level tokenizer needs at least 257"):
        build_text_tokenizer(TEXTS, 100)
    build_text_tokenizer(TEXTS, 300).save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match="model.text_vocab_size: 1024, but the tokenizer in .* has 300 ids"):
        load_text_tokenizer(tmp_path / "tok", 1024)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_text_tokenizer(tmp_path, 300)

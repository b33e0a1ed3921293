"""Who sees whom, for every sequence type, as readable tables; plus what the masks promise the backbone.

Legend (row = query, column = key; 1 = may attend): P/M task token, [ ] image-block delimiters
(<|soi|>, <|eoi|>), c CLIP tokens, v VQ codes, d description, i instruction, t MMU text,
a action query (<|act|>), b RT-2 action-bin token, _ [PAD].
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.batches import RobotBatch
from model.sequences import attention_mask, decode_step_mask, last_valid_index, position_ids
from model.vla import VLAModel
from tests.model.conftest import mmu_batch, robot_batch, tiny

# 4 CLIP tokens, 4 VQ codes, 2 action steps: small enough to read
MICRO = tiny(vision_image_size=16, vq=dataclasses.replace(tiny().vq, image_size=16), chunk_len=2)
CHARS = {"description": "d", "instruction": "i", "actions": "a", "text": "t"}


def render(model, seq) -> str:
    labels = []
    for name, span in seq.spans.items():
        n = span.stop - span.start
        if name == "task":
            labels += ["M" if "text" in seq.spans else "P"]
        elif name in ("scene", "image"):
            labels += ["[", *("c" if name == "scene" or "text" in seq.spans else "v") * (n - 2), "]"]
        elif name == "actions" and model.action_head is None:
            labels += ["a", *"b" * (n - 1)]
        else:
            labels += [CHARS[name]] * n
    labels = [lab if seq.valid[0, i] else "_" for i, lab in enumerate(labels)]
    mask = seq.attention_mask()[0, 0]
    rows = ["  " + " ".join(labels)]
    for i, lab in enumerate(labels):
        rows.append(lab + " " + " ".join("1" if mask[i, j] else "." for j in range(seq.length)))
    return "\n".join(rows)


def table(text: str) -> str:
    return "\n".join(line[8:] for line in text.strip("\n").rstrip().splitlines())


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return VLAModel(MICRO)


def micro_batch(conditioned=False):
    pad = MICRO.text_vocab_size  # [PAD] is the first id after the text vocabulary
    instr = torch.tensor([[5, 6, pad]])
    codes = torch.tensor([[1, 2, 3, 4]])
    if not conditioned:
        return RobotBatch(instr, codes)
    return RobotBatch(instr, codes, scene_pixels=torch.zeros(1, 3, 16, 16), description_ids=torch.tensor([[7, pad]]))


def test_prediction_sequence_table(micro):
    # PRE (stage 1, λ_ACT = 0): instruction causal; the image block sees the prompt and itself
    assert render(micro, micro.robot_sequence(micro_batch(), None)) == table("""
          P i i _ [ v v v v ]
        P 1 . . . . . . . . .
        i 1 1 . . . . . . . .
        i 1 1 1 . . . . . . .
        _ . . . 1 . . . . . .
        [ 1 1 1 . 1 1 1 1 1 1
        v 1 1 1 . 1 1 1 1 1 1
        v 1 1 1 . 1 1 1 1 1 1
        v 1 1 1 . 1 1 1 1 1 1
        v 1 1 1 . 1 1 1 1 1 1
        ] 1 1 1 . 1 1 1 1 1 1
    """)


def test_action_sequence_table_image_rows_do_not_see_queries(micro):
    ids = micro.action_query_ids(1, torch.device("cpu"))
    assert render(micro, micro.robot_sequence(micro_batch(), ids)) == table("""
          P i i _ [ v v v v ] a a
        P 1 . . . . . . . . . . .
        i 1 1 . . . . . . . . . .
        i 1 1 1 . . . . . . . . .
        _ . . . 1 . . . . . . . .
        [ 1 1 1 . 1 1 1 1 1 1 . .
        v 1 1 1 . 1 1 1 1 1 1 . .
        v 1 1 1 . 1 1 1 1 1 1 . .
        v 1 1 1 . 1 1 1 1 1 1 . .
        v 1 1 1 . 1 1 1 1 1 1 . .
        ] 1 1 1 . 1 1 1 1 1 1 . .
        a 1 1 1 . 1 1 1 1 1 1 1 .
        a 1 1 1 . 1 1 1 1 1 1 1 1
    """)


def test_mmu_conditioned_action_sequence_table(micro):
    # L' = [CLIP tokens, description, instruction]; the two image blocks are separate bidirectional blocks
    ids = micro.action_query_ids(1, torch.device("cpu"))
    assert render(micro, micro.robot_sequence(micro_batch(conditioned=True), ids)) == table("""
          P [ c c c c ] d _ i i _ [ v v v v ] a a
        P 1 . . . . . . . . . . . . . . . . . . .
        [ 1 1 1 1 1 1 1 . . . . . . . . . . . . .
        c 1 1 1 1 1 1 1 . . . . . . . . . . . . .
        c 1 1 1 1 1 1 1 . . . . . . . . . . . . .
        c 1 1 1 1 1 1 1 . . . . . . . . . . . . .
        c 1 1 1 1 1 1 1 . . . . . . . . . . . . .
        ] 1 1 1 1 1 1 1 . . . . . . . . . . . . .
        d 1 1 1 1 1 1 1 1 . . . . . . . . . . . .
        _ . . . . . . . . 1 . . . . . . . . . . .
        i 1 1 1 1 1 1 1 1 . 1 . . . . . . . . . .
        i 1 1 1 1 1 1 1 1 . 1 1 . . . . . . . . .
        _ . . . . . . . . . . . 1 . . . . . . . .
        [ 1 1 1 1 1 1 1 1 . 1 1 . 1 1 1 1 1 1 . .
        v 1 1 1 1 1 1 1 1 . 1 1 . 1 1 1 1 1 1 . .
        v 1 1 1 1 1 1 1 1 . 1 1 . 1 1 1 1 1 1 . .
        v 1 1 1 1 1 1 1 1 . 1 1 . 1 1 1 1 1 1 . .
        v 1 1 1 1 1 1 1 1 . 1 1 . 1 1 1 1 1 1 . .
        ] 1 1 1 1 1 1 1 1 . 1 1 . 1 1 1 1 1 1 . .
        a 1 1 1 1 1 1 1 1 . 1 1 . 1 1 1 1 1 1 1 .
        a 1 1 1 1 1 1 1 1 . 1 1 . 1 1 1 1 1 1 1 1
    """)


def test_mmu_sequence_table(micro):
    pad = micro.layout.pad_id
    seq = micro.mmu_sequence(torch.zeros(1, 3, 16, 16), torch.tensor([[5, 6, 7, pad]]))
    assert render(micro, seq) == table("""
          M [ c c c c ] t t t _
        M 1 . . . . . . . . . .
        [ 1 1 1 1 1 1 1 . . . .
        c 1 1 1 1 1 1 1 . . . .
        c 1 1 1 1 1 1 1 . . . .
        c 1 1 1 1 1 1 1 . . . .
        c 1 1 1 1 1 1 1 . . . .
        ] 1 1 1 1 1 1 1 . . . .
        t 1 1 1 1 1 1 1 1 . . .
        t 1 1 1 1 1 1 1 1 1 . .
        t 1 1 1 1 1 1 1 1 1 1 .
        _ . . . . . . . . . . 1
    """)


def test_rt2_sequence_table():
    model = VLAModel(dataclasses.replace(MICRO, action_head="tokens", action_dim=2))
    bins = torch.tensor([[[3, 0], [5, 31]]])
    ids = model.action_query_ids(1, torch.device("cpu"), bins)
    assert ids[0, 1:].tolist() == [3 + model.layout.bin_offset, model.layout.bin_offset, 5 + model.layout.bin_offset]
    assert render(model, model.robot_sequence(micro_batch(), ids)) == table("""
          P i i _ [ v v v v ] a b b b
        P 1 . . . . . . . . . . . . .
        i 1 1 . . . . . . . . . . . .
        i 1 1 1 . . . . . . . . . . .
        _ . . . 1 . . . . . . . . . .
        [ 1 1 1 . 1 1 1 1 1 1 . . . .
        v 1 1 1 . 1 1 1 1 1 1 . . . .
        v 1 1 1 . 1 1 1 1 1 1 . . . .
        v 1 1 1 . 1 1 1 1 1 1 . . . .
        v 1 1 1 . 1 1 1 1 1 1 . . . .
        ] 1 1 1 . 1 1 1 1 1 1 . . . .
        a 1 1 1 . 1 1 1 1 1 1 1 . . .
        b 1 1 1 . 1 1 1 1 1 1 1 1 . .
        b 1 1 1 . 1 1 1 1 1 1 1 1 1 .
        b 1 1 1 . 1 1 1 1 1 1 1 1 1 1
    """)


def test_positions_skip_pads_and_pads_are_isolated():
    valid = torch.tensor([[True, True, False, True, False]])
    assert position_ids(valid).tolist() == [[0, 1, 2, 2, 3]]
    mask = attention_mask(valid, torch.zeros(5, dtype=torch.long))[0, 0]
    assert not mask[[0, 1, 3, 4], 2].any()  # seen by nothing
    assert mask[2].tolist() == [False, False, True, False, False]  # sees only itself: a defined softmax
    assert last_valid_index(valid).tolist() == [3]
    step = decode_step_mask(valid, torch.tensor([True]))
    assert step.shape == (1, 1, 1, 6) and step[0, 0, 0].tolist() == [True, True, False, True, False, True]


def test_real_outputs_ignore_pads_and_actions_and_stay_finite(tiny_cfg):
    """Pads are seen by nothing; image rows never see action queries (the reference's leak); no NaN."""
    torch.manual_seed(0)
    model = VLAModel(tiny_cfg).eval()
    batch = robot_batch(tiny_cfg, conditioned=True)
    seq = model.robot_sequence(batch, model.action_query_ids(3, torch.device("cpu")))
    hidden = model.run_backbone(seq)
    assert torch.isfinite(hidden).all()
    disturbed = dataclasses.replace(seq, embeds=seq.embeds.clone())
    disturbed.embeds[~seq.valid] = 1e3  # pads
    disturbed.embeds[:, seq.spans["actions"]] += 5.0  # action queries
    again = model.run_backbone(disturbed)
    before_actions = seq.valid.clone()
    before_actions[:, seq.spans["actions"]] = False
    torch.testing.assert_close(again[before_actions], hidden[before_actions])
    assert not torch.allclose(again[:, seq.spans["actions"]], hidden[:, seq.spans["actions"]])


def test_mmu_text_must_be_right_padded(tiny_cfg):
    model = VLAModel(tiny_cfg)
    batch = mmu_batch(tiny_cfg)
    batch.input_ids[0, 1] = model.layout.pad_id
    with pytest.raises(ValueError, match="right-padded"):
        model.understanding_loss(batch)

"""`model.prompt_layout: reference` computes what the authors' model computes on their PRE/ACT sequence.

The reference here is a plain statement of their prompting and mask code (UP-VLA
`training/prompting_utils.py`: `pre_gen_prompt`, `create_attention_mask_predict_next_for_future_prediction`
with `rm_pad_in_image`), written per sample with Python loops as theirs is, run through the same backbone with
transformers' default positions (column indices). Our vectorised path must give the same action-query and
image-row states.
"""

from __future__ import annotations

import pytest
import torch

from model.batches import RobotBatch, TrainBatch
from model.losses import LossWeights
from model.sequences import reference_text_slot
from model.vla import VLAModel
from tests.fixtures.published.reference import their_ids, their_mask
from tests.model.conftest import robot_batch, tiny


@pytest.fixture(scope="module")
def model() -> VLAModel:
    torch.manual_seed(0)
    return VLAModel(tiny(prompt_layout="reference", qk_layernorm=True, max_text_len=12)).eval()


def test_the_text_slot_is_their_left_padded_prompt(model):
    layout, slot = model.layout, model.cfg.max_text_len + 1
    batch = robot_batch(model.cfg, batch=3)
    ours = reference_text_slot(batch.instruction_ids, layout.pad_id, width=slot, task_id=layout.pre_id,
                               bos_id=layout.eos_id, eos_id=layout.eos_id)
    for row, ids in zip(ours, batch.instruction_ids, strict=True):
        instruction = ids[ids != layout.pad_id].tolist()
        expected = their_ids(instruction, [], slot=slot, layout=layout, chunk=0)[:slot]
        assert row.tolist() == expected
    long = torch.arange(20)[None] % layout.eos_id  # longer than the slot: cut, and the slot still ends in eos
    cut = reference_text_slot(long, layout.pad_id, width=slot, task_id=layout.pre_id, bos_id=layout.eos_id,
                              eos_id=layout.eos_id)
    assert cut[0].tolist() == their_ids(long[0].tolist(), [], slot=slot, layout=layout, chunk=0)[:slot]


def test_a_pad_before_a_token_is_refused(model):
    layout = model.layout
    ids = torch.tensor([[5, layout.pad_id, 6]])
    with pytest.raises(ValueError, match="right-padded"):
        reference_text_slot(ids, layout.pad_id, width=8, task_id=layout.pre_id, bos_id=0, eos_id=0)


@torch.no_grad()
def test_states_equal_their_sequence_mask_and_positions(model):
    cfg, layout = model.cfg, model.layout
    batch = robot_batch(cfg, batch=3, targets=False)
    queries = model.action_query_ids(3, torch.device("cpu"))
    seq = model.robot_sequence(batch, queries)
    ours = model.run_backbone(seq)
    for i in range(3):
        instruction = batch.instruction_ids[i][batch.instruction_ids[i] != layout.pad_id].tolist()
        ids = torch.tensor(their_ids(instruction, batch.current_codes[i].tolist(), slot=cfg.max_text_len + 1,
                                     layout=layout, chunk=cfg.chunk_len))
        assert ids.shape[0] == seq.length
        mask = their_mask(ids, layout)
        theirs = model.backbone.model(input_ids=ids[None], attention_mask=mask[None, None],
                                      use_cache=False).last_hidden_state[0]  # positions: transformers' arange
        real = ids != layout.pad_id  # pad rows' states are never read
        torch.testing.assert_close(ours[i][real], theirs[real], atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_image_rows_see_the_action_queries_as_theirs_do(model):
    """The authors' leak, kept on purpose: their predicted image depends on the queries' embeddings."""
    batch = robot_batch(model.cfg, batch=1, targets=False)
    queries = model.action_query_ids(1, torch.device("cpu"))
    seq = model.robot_sequence(batch, queries)
    image = seq.spans["image"]
    before = model.run_backbone(seq)[0, image]
    seq.embeds[:, seq.spans["actions"]] += 1.0
    after = model.run_backbone(seq)[0, image]
    assert not torch.allclose(before, after)


def test_the_reference_layout_trains_and_predicts(model):
    batch = robot_batch(model.cfg, batch=2)
    trained = VLAModel(model.cfg)
    loss, _ = trained(TrainBatch(robot=batch, mmu=None), LossWeights(mmu=0.0, pre=1.0, act=1.0))
    loss.backward()
    assert torch.isfinite(loss)
    pred = model.predict(RobotBatch(instruction_ids=batch.instruction_ids, current_codes=batch.current_codes),
                         bf16=False)
    assert pred.actions.shape == (2, model.cfg.chunk_len, model.cfg.action_dim)


def test_the_reference_layout_has_no_mmu_prefix(model):
    batch = robot_batch(model.cfg, batch=2, conditioned=True, targets=False)
    with pytest.raises(ValueError, match="MMU-conditioned"):
        model.robot_sequence(batch, None)

"""The authors' MAP action head (`map_variant: reference`): published key names, exact math, VLAModel wiring.

The expected outputs come from `reference_map`, a plain-functional statement of UP-VLA's `MAPBlock` +
`to_logits` (models/map_block.py, models/modeling_upvla.py) written here from the state dict alone.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from model.batches import TrainBatch
from model.heads import MAPHead, ReferenceMAPHead, ReferenceRMSNorm, actions_from_outputs, build_action_head
from model.losses import LossWeights, reference_action_loss
from model.vla import VLAModel
from tests.fixtures.published.reference import reference_map, rms_norm
from tests.fixtures.published.upvla import map_head_state
from tests.model.conftest import robot_batch, tiny

DIM, HEADS, CHUNK, ACTION_DIM = 64, 8, 4, 7


def published_state(seed: int = 0, *, small_norm_input: bool = False) -> dict[str, Tensor]:
    """`map_head_state` at test size; `small_norm_input` scales the latent and attention output by 1e-5 so that
    attn_norm sees a vector of rms ~1e-5, where the clamp form and torch's eps-in-the-root form disagree."""
    state = map_head_state(DIM, HEADS, CHUNK, ACTION_DIM, torch.Generator().manual_seed(seed))
    if small_norm_input:
        for key in ("token_learner.latents", "token_learner.attn.proj.weight", "token_learner.attn.proj.bias"):
            state[key] = state[key] * 1e-5
    return state


def loaded_head(state: dict[str, Tensor]) -> ReferenceMAPHead:
    head = ReferenceMAPHead(DIM, HEADS, CHUNK, ACTION_DIM)
    result = head.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return head.eval()


def test_state_dict_keys_and_shapes_are_the_published_ones():
    state = published_state()
    ours = ReferenceMAPHead(DIM, HEADS, CHUNK, ACTION_DIM).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("small_norm_input", [False, True])
def test_head_computes_the_reference_map_block(small_norm_input):
    state = published_state(small_norm_input=small_norm_input)
    head = loaded_head(state)
    x = torch.randn(3, CHUNK, DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(head(x), reference_map(state, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("mistake", "small_norm_input"), [
    ({"gate_first": True}, False), ({"values_first": True}, False), ({"heads": HEADS // 2}, False),
    ({"torch_norm": True}, True),
])
def test_each_plausible_mistake_changes_the_outputs(mistake, small_norm_input):
    """The equivalence above is discriminating: swapping value/gate, values-then-keys, the authors' nominal
    n_heads=4 instead of the 8 used, or torch's RMSNorm (shown on a small-norm input) each move the outputs."""
    state = published_state(small_norm_input=small_norm_input)
    x = torch.randn(3, CHUNK, DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        gap = (loaded_head(state)(x) - reference_map(state, x, **mistake)).abs().max()
    assert gap > 1e-2


def test_norm_is_the_clamp_form_and_keeps_the_input_dtype():
    norm = ReferenceRMSNorm(DIM)
    with torch.no_grad():
        norm.g.copy_(torch.linspace(0.5, 1.5, DIM))
    x = torch.randn(2, DIM, generator=torch.Generator().manual_seed(2)) * 1e-5
    with torch.no_grad():
        torch.testing.assert_close(norm(x), rms_norm(x, norm.g))
        assert (norm(x) - rms_norm(x, norm.g, torch_form=True)).abs().max() > 0.5
        torch.testing.assert_close(norm(torch.zeros(DIM)), torch.zeros(DIM))
        bf16 = norm(x.bfloat16())
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float(), rms_norm(x.bfloat16().float(), norm.g), rtol=1e-2, atol=1e-2)


def reference_model() -> VLAModel:
    torch.manual_seed(0)
    return VLAModel(tiny(map_variant="reference", normalize_actions=False, map_heads=HEADS))


def test_vla_model_trains_one_step_and_predicts():
    model = reference_model()
    head_keys = {k.removeprefix("action_head.") for k in model.state_dict() if k.startswith("action_head.")}
    cfg = model.cfg
    assert head_keys == set(map_head_state(cfg.hidden_size, HEADS, cfg.chunk_len, 7, torch.Generator()))
    loss, metrics = model(TrainBatch(robot_batch(cfg)), LossWeights(mmu=0.0, pre=1.0, act=1.0))
    assert torch.isfinite(loss) and {"act_pose_mse", "act_gripper_mse"} <= set(metrics)
    loss.backward()
    for name, param in model.action_head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    inputs = robot_batch(cfg, batch=2, targets=False)
    pred = model.predict(inputs, bf16=False)
    assert pred.actions.shape == (2, cfg.chunk_len, 7) and torch.isfinite(pred.actions).all()
    assert set(pred.actions[..., 6].unique().tolist()) <= {-1.0, 1.0}
    # bf16 inference (autocast, norms in fp32) agrees with fp32 on the pose
    assert (model.predict(inputs).actions[..., :6] - pred.actions[..., :6]).abs().max() < 0.1


def test_build_action_head_follows_the_config():
    assert isinstance(build_action_head(tiny(map_variant="reference", normalize_actions=False)), ReferenceMAPHead)
    assert isinstance(build_action_head(tiny()), MAPHead)
    assert build_action_head(tiny(action_head="tokens")) is None


def test_act_loss_is_the_mse_over_all_seven_dims_and_every_step():
    model = reference_model()
    batch = robot_batch(model.cfg)
    batch.action_mask = torch.ones(batch.actions.shape[:2], dtype=torch.bool)
    batch.action_mask[:, -1] = False  # the authors train the padded steps too
    outputs = []
    model.action_head.register_forward_hook(lambda module, args, out: outputs.append(out))
    terms, parts = model.robot_losses(batch, LossWeights(mmu=0.0, pre=0.0, act=1.0))
    torch.testing.assert_close(terms["act"], F.mse_loss(outputs[0], batch.actions))
    raw = torch.randn_like(batch.actions)
    loss, parts = reference_action_loss(raw, batch.actions)
    torch.testing.assert_close(loss, F.mse_loss(raw, batch.actions))
    torch.testing.assert_close(parts["act_gripper_mse"], F.mse_loss(raw[..., 6], batch.actions[..., 6]))
    torch.testing.assert_close(parts["act_pose_mse"], F.mse_loss(raw[..., :6], batch.actions[..., :6]))


def test_inference_thresholds_the_regressed_gripper_at_zero():
    raw = torch.tensor([[[0.3, -0.2, 0.1, 0.0, 0.05, -0.1, 0.2], [0.1, 0.0, 0.0, 0.0, 0.0, 0.0, -0.01]]])
    actions = actions_from_outputs(raw)
    assert actions[0, :, 6].tolist() == [1.0, -1.0]
    torch.testing.assert_close(actions[..., :6], raw[..., :6])


def test_reference_head_rejects_standardised_actions():
    with pytest.raises(ValueError, match="normalize_actions"):
        tiny(map_variant="reference", normalize_actions=True).validate()

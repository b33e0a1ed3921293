import math

import pytest
import torch

from model.batches import TrainBatch
from model.losses import LossWeights
from model.proprio import NUM_FEATURES, ProprioEncoder, proprio_features
from model.vla import VLAModel
from tests.model.conftest import robot_batch, tiny

ACT = LossWeights(mmu=0.0, pre=0.0, act=1.0)


def robot_obs(batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 15, generator=g)


def trained_proprio_model(**changes) -> VLAModel:
    """A proprio model whose encoder is no longer at its zero start (as after training)."""
    torch.manual_seed(0)
    model = VLAModel(tiny(proprio=True, **changes)).eval()
    torch.nn.init.normal_(model.proprio.mlp[2].weight, std=0.5)
    return model


def test_features_are_continuous_where_an_euler_angle_wraps():
    near_pi = torch.zeros(2, 15)
    near_pi[0, 3], near_pi[1, 3] = math.pi - 1e-4, -math.pi + 1e-4  # the same roll, written both ways
    features = proprio_features(near_pi)
    assert features.shape == (2, NUM_FEATURES)
    torch.testing.assert_close(features[0], features[1], atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="expected 15 values"):
        proprio_features(torch.zeros(2, 7))


def test_a_fresh_encoder_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    plain = VLAModel(tiny()).eval()
    torch.manual_seed(0)
    with_state = VLAModel(tiny(proprio=True)).eval()
    inputs = robot_batch(plain.cfg, batch=2, targets=False)
    expected = plain.predict(inputs, bf16=False).actions
    inputs.robot_obs = robot_obs(2)
    torch.testing.assert_close(with_state.predict(inputs, bf16=False).actions, expected)


@pytest.mark.parametrize("head", ["map", "tokens"])
def test_actions_read_the_state_and_the_predicted_frame_does_not(head):
    model = trained_proprio_model(action_head=head)
    inputs = robot_batch(model.cfg, batch=2, targets=False)
    inputs.robot_obs = robot_obs(2, seed=1)
    first = model.predict(inputs, bf16=False)
    inputs.robot_obs = robot_obs(2, seed=2)
    second = model.predict(inputs, bf16=False)
    assert not torch.equal(first.actions, second.actions)
    torch.testing.assert_close(first.future_codes, second.future_codes)


def test_actions_without_robot_obs_are_refused_but_the_future_frame_alone_needs_none():
    model = trained_proprio_model()
    inputs = robot_batch(model.cfg, batch=2, targets=False)
    with pytest.raises(ValueError, match="RobotBatch.robot_obs: required"):
        model.predict(inputs, bf16=False)
    only_frame = model.predict(inputs, bf16=False, with_actions=False)
    assert only_frame.actions is None
    inputs.robot_obs = robot_obs(2)
    torch.testing.assert_close(only_frame.future_codes, model.predict(inputs, bf16=False).future_codes)


def test_without_the_gripper_the_actions_ignore_its_width_and_last_command_but_not_the_arm():
    model = trained_proprio_model(proprio_gripper=False)
    inputs = robot_batch(model.cfg, batch=2, targets=False)
    state = robot_obs(2, seed=1)
    inputs.robot_obs = state
    first = model.predict(inputs, bf16=False).actions
    gripper = state.clone()
    gripper[:, 6], gripper[:, 14] = -gripper[:, 6] + 0.05, -gripper[:, 14]  # width and last command
    inputs.robot_obs = gripper
    torch.testing.assert_close(model.predict(inputs, bf16=False).actions, first, rtol=0, atol=0)
    arm = state.clone()
    arm[:, 7:14] += 0.3  # the joints
    inputs.robot_obs = arm
    assert not torch.equal(model.predict(inputs, bf16=False).actions, first)
    # the same weights with the gripper read do see it
    reads_it = trained_proprio_model(proprio_gripper=True)
    reads_it.load_state_dict(model.state_dict())
    inputs.robot_obs = state
    before = reads_it.predict(inputs, bf16=False).actions
    inputs.robot_obs = gripper
    assert not torch.equal(reads_it.predict(inputs, bf16=False).actions, before)


def test_leaving_the_gripper_out_of_no_proprioception_is_refused():
    with pytest.raises(ValueError, match="proprio_gripper: false .* model.proprio is false"):
        VLAModel(tiny(proprio=False, proprio_gripper=False))


def test_the_action_loss_trains_the_encoder_from_its_zero_start():
    torch.manual_seed(0)
    model = VLAModel(tiny(proprio=True))
    batch = robot_batch(model.cfg, batch=4)
    batch.robot_obs = robot_obs(4)
    loss, _ = model(TrainBatch(batch), ACT)
    loss.backward()
    assert model.proprio.mlp[2].weight.grad.abs().sum() > 0  # the zero layer moves first, then the rest


def test_standardisation_uses_the_stored_stats_and_survives_save_and_load(tmp_path):
    model = trained_proprio_model()
    mean, std = torch.linspace(-1, 1, NUM_FEATURES), torch.linspace(0.5, 2.0, NUM_FEATURES)
    model.set_proprio_stats(mean, std)
    state = robot_obs(3)
    x = (proprio_features(state) - mean) / std
    torch.testing.assert_close(model.proprio(state), model.proprio.mlp(x))
    model.save_pretrained(tmp_path)
    loaded = VLAModel.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.proprio.mean, mean)
    torch.testing.assert_close(loaded.proprio(state), model.proprio(state))


@pytest.mark.parametrize(("mean", "std", "message"), [
    (torch.zeros(5), torch.ones(5), "shape"),
    (torch.zeros(NUM_FEATURES), torch.zeros(NUM_FEATURES), "std > 0"),
    (torch.full((NUM_FEATURES,), float("inf")), torch.ones(NUM_FEATURES), "finite"),
])
def test_bad_proprio_stats_are_refused(mean, std, message):
    with pytest.raises(ValueError, match=message):
        ProprioEncoder(8).set_stats(mean, std)


def test_a_model_without_proprio_refuses_stats():
    with pytest.raises(ValueError, match="model.proprio is false"):
        VLAModel(tiny()).set_proprio_stats(torch.zeros(NUM_FEATURES), torch.ones(NUM_FEATURES))

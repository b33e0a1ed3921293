"""The weight average: its arithmetic, its place in the full-state checkpoint and in the exported model."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from components.training.ema import EMA_FILE, WeightEMA, ema_decay_at
from components.training.state import MODEL_DIR, load_train_state, save_train_state
from components.training.train import save_averaged_model
from model.vla import VLAModel
from tests.components.training.test_state import fresh, meta_model, step


def test_decay_ramps_up_to_the_configured_value():
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)  # the first update keeps 90% of the new weights
    assert ema_decay_at(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay_at(100_000, 0.999) == 0.999


def test_update_is_the_exponential_average_of_the_trained_weights_only():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[1].requires_grad_(False)
    ema = WeightEMA(model, decay=0.5)
    assert set(ema.shadow) == {"0.weight", "0.bias"}  # frozen parameters are not averaged
    start = model[0].weight.detach().clone()
    expected = start.clone()
    for t in range(3):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        ema.update(t)
        d = ema_decay_at(t, 0.5)
        expected = d * expected + (1 - d) * model[0].weight.detach()
    torch.testing.assert_close(ema.shadow["0.weight"], expected)
    assert not torch.equal(ema.shadow["0.weight"], model[0].weight)  # the live weights are untouched


def test_decay_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="ema_decay: must be in"):
        WeightEMA(torch.nn.Linear(1, 1), decay=1.0)


def checkpoint_with_average(folder):
    """A tiny model trained 3 steps with a weight average, checkpointed to `folder`; (model, average)."""
    model, opt, sched = fresh(0)
    ema = WeightEMA(model, decay=0.9)
    for s in range(3):
        step(model, opt, sched, s)
        ema.update(s)
    save_train_state(folder, model, opt, sched, step=3, data_position={}, plain_model=meta_model(model), ema=ema)
    return model, ema


def test_checkpoint_keeps_live_weights_and_the_average_and_a_resume_restores_both(tmp_path):
    model, ema = checkpoint_with_average(tmp_path)
    live = load_file(str(tmp_path / MODEL_DIR / "model.safetensors"))
    name = next(iter(ema.shadow))
    torch.testing.assert_close(live[name], dict(model.named_parameters())[name].detach())

    other, other_opt, other_sched = fresh(1)
    restored = WeightEMA(other, decay=0.9)
    load_train_state(tmp_path, other, other_opt, other_sched, ema=restored)
    for key, value in ema.shadow.items():
        torch.testing.assert_close(restored.shadow[key], value, msg=key)

    (tmp_path / EMA_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=f"{EMA_FILE}: missing"):
        load_train_state(tmp_path, other, other_opt, other_sched, ema=WeightEMA(other, decay=0.9))


def test_the_exported_model_holds_the_average(tmp_path):
    model, ema = checkpoint_with_average(tmp_path / "ckpt")
    save_averaged_model(tmp_path / "ckpt" / MODEL_DIR, tmp_path / "ckpt" / EMA_FILE, tmp_path / "out")
    exported = dict(VLAModel.from_pretrained(tmp_path / "out").named_parameters())
    for key, value in ema.shadow.items():
        torch.testing.assert_close(exported[key], value, msg=key)
    assert any(not torch.equal(exported[k], p.detach()) for k, p in model.named_parameters() if k in ema.shadow)

    broken = {**ema.full_state(), "no.such.weight": torch.zeros(1)}
    save_file(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ValueError, match="no.such.weight: not a parameter"):
        save_averaged_model(tmp_path / "ckpt" / MODEL_DIR, tmp_path / "broken.safetensors", tmp_path / "out2")

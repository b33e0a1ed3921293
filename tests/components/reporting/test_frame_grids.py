"""The predicted-vs-true future-frame grid logged to MLflow during training: tiles, titles and labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import components.reporting.frame_grids as frame_grids
from components.reporting.frame_grids import PAD, SCALE, prediction_grid
from model.vla import VLAModel
from tests.fixtures.pictures import has_text, label_bands
from tests.model.conftest import TINY, robot_batch, tiny


@pytest.mark.parametrize("views", [1, 2])
def test_one_row_per_sample_and_three_columns_of_decoded_frames_with_labels(views):
    torch.manual_seed(0)
    model = VLAModel(tiny(num_views=views)).eval()
    batch = robot_batch(model.cfg, batch=3, conditioned=True)
    picture = prediction_grid(model, batch, bf16=False, stage="tune", step=7)
    side = TINY.vq.image_size * SCALE
    tiles_shape = (3 * (views * side + PAD) + PAD, 3 * (side + PAD) + PAD, 3)
    header, left, grid = label_bands(picture, tiles_shape)
    assert picture.dtype == np.uint8
    true_future = model.decode_codes(batch.future_codes)[0, 0]  # the whole batch, as the grid decodes it
    tile = grid[PAD:PAD + side, 2 * (side + PAD) + PAD:][:side, :side]  # row 0, column "true future"
    expected = ((true_future.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(tile[::SCALE, ::SCALE], expected)
    assert has_text(header) and has_text(left)
    for c in range(3):  # a title over each column
        assert has_text(header[-14:, left.shape[1] + c * (side + PAD): left.shape[1] + (c + 1) * (side + PAD)])
    for r in range(3 * views):  # a (sample, camera) label beside each view
        assert has_text(left[PAD + r // views * (views * side + PAD) + r % views * side:][:side])


def test_the_labels_name_the_columns_cameras_samples_stage_step_and_dt(monkeypatch):
    seen = {}

    def spy(grid, **labels):
        seen.update(labels)
        return grid

    monkeypatch.setattr(frame_grids, "label_grid", spy)
    model = VLAModel(tiny(num_views=2)).eval()
    prediction_grid(model, robot_batch(model.cfg, batch=2, conditioned=True), bf16=False, stage="tune", step=500)
    dt = TINY.delta_t
    assert "tune step 500" in seen["title"] and f"dt = {dt} control steps" in seen["title"]
    heads = [text for _, text in seen["columns"]]
    assert heads == ["current frame (t)", f"predicted (t+{dt})", f"true future (t+{dt})"]
    assert [text for _, text in seen["rows"]] == ["sample 0\nstatic cam", "sample 0\ngripper cam",
                                                  "sample 1\nstatic cam", "sample 1\ngripper cam"]
    ys = [y for y, _ in seen["rows"]]
    assert ys == sorted(ys)


def test_a_batch_without_future_frames_is_refused():
    model = VLAModel(TINY)
    with pytest.raises(ValueError, match="future_codes"):
        prediction_grid(model, robot_batch(TINY, targets=False))

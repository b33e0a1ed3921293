"""The predicted-vs-true future-frame grid logged to MLflow during training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.reporting.frame_grids import PAD, SCALE, prediction_grid
from model.vla import VLAModel
from tests.model.conftest import TINY, robot_batch, tiny


@pytest.mark.parametrize("views", [1, 2])
def test_one_row_per_sample_and_three_columns_of_decoded_frames(views):
    torch.manual_seed(0)
    model = VLAModel(tiny(num_views=views)).eval()
    batch = robot_batch(model.cfg, batch=3, conditioned=True)
    grid = prediction_grid(model, batch, bf16=False)
    side = TINY.vq.image_size * SCALE
    assert grid.dtype == np.uint8
    assert grid.shape == (3 * (views * side + PAD) + PAD, 3 * (side + PAD) + PAD, 3)
    true_future = model.decode_codes(batch.future_codes[:1])[0, 0]
    tile = grid[PAD:PAD + side, 2 * (side + PAD) + PAD:][:side, :side]  # row 0, column "true future"
    expected = ((true_future.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(tile[::SCALE, ::SCALE], expected)


def test_a_batch_without_future_frames_is_refused():
    model = VLAModel(TINY)
    with pytest.raises(ValueError, match="future_codes"):
        prediction_grid(model, robot_batch(TINY, targets=False))

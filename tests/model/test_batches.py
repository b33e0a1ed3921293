"""Camera frames -> model tensors, padding and understanding-sample helpers."""

from __future__ import annotations

import pytest
import torch

from model.batches import CLIP_MEAN, CLIP_STD, IGNORE, clip_pixels, mmu_example, pad_ids, square_resize, vq_pixels


def test_frames_become_square_model_inputs():
    frames = torch.zeros(2, 200, 200, 3, dtype=torch.uint8)
    frames[:, :100] = 255  # top half white
    vq = vq_pixels(frames, 64)
    assert vq.shape == (2, 3, 64, 64) and vq.dtype == torch.float32
    assert vq.min() >= -1 and vq.max() <= 1
    assert vq[:, :, 5].mean() == pytest.approx(1.0) and vq[:, :, -5].mean() == pytest.approx(-1.0)
    gripper = torch.full((1, 84, 84, 3), 128, dtype=torch.uint8)
    assert vq_pixels(gripper, 64).shape == (1, 3, 64, 64)


def test_non_square_frames_are_centre_cropped():
    frames = torch.zeros(1, 40, 80, 3, dtype=torch.uint8)
    frames[:, :, 20:60] = 255  # only the centre square is white
    assert square_resize(frames, 40).min() == pytest.approx(1.0)


def test_clip_inputs_are_normalised():
    grey = torch.full((1, 50, 50, 3), 255, dtype=torch.uint8)
    x = clip_pixels(grey, 32)
    expected = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(x[0, :, 0, 0], expected)


def test_bad_frames_are_rejected():
    with pytest.raises(ValueError, match=r"expected uint8 frames \(B, H, W, 3\)"):
        vq_pixels(torch.zeros(1, 3, 64, 64), 64)


def test_padding_and_understanding_examples():
    assert pad_ids([[1, 2, 3], [4]], pad_id=9).tolist() == [[1, 2, 3], [4, 9, 9]]
    with pytest.raises(ValueError, match="more than the padded length 2"):
        pad_ids([[1, 2, 3]], pad_id=9, length=2)
    ids, labels = mmu_example([5, 6], [7, 8], eos_id=1)
    assert ids == [5, 6, 7, 8, 1] and labels == [IGNORE, IGNORE, 7, 8, 1]

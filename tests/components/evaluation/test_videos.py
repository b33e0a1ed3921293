"""Rollout videos: camera and predicted-future panels named above them, the instruction below, as a GIF."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from components.evaluation.inference import LocalVLAFactory
from components.evaluation.rollout import ChainOutcome, drive_chains
from components.evaluation.videos import CAPTION_HEIGHT, LABEL_HEIGHT, RolloutFilm, compose_frame
from envs.playtable import PlayTableEnv
from envs.sequences import get_sequences
from tests.fixtures.pictures import has_text
from tests.fixtures.tiny_policy import write_tiny_checkpoint
from tests.model.conftest import TINY


def test_a_frame_names_both_panels_above_them_and_keeps_the_camera_unchanged():
    camera = np.full((60, 80, 3), 90, dtype=np.uint8)
    frame = np.asarray(compose_frame(camera, np.full((16, 16, 3), 200, dtype=np.uint8), "open the drawer",
                                     delta_t=10))
    assert frame.shape == (LABEL_HEIGHT + 60 + CAPTION_HEIGHT, 2 * 80 + 2, 3)
    assert np.array_equal(frame[LABEL_HEIGHT:LABEL_HEIGHT + 60, :80], camera)
    assert (frame[LABEL_HEIGHT:LABEL_HEIGHT + 60, 82:] == 200).all()  # the prediction, upscaled
    for panel in (frame[:LABEL_HEIGHT, :80], frame[:LABEL_HEIGHT, 82:]):  # white names on black
        assert has_text(panel, background="dark")
    assert has_text(frame[-CAPTION_HEIGHT:], background="dark")


@pytest.mark.parametrize("delta_t", [None, 10])
def test_the_film_passes_its_delta_t_to_every_frame(delta_t):
    film = RolloutFilm(stride=1, delta_t=delta_t)
    film.add(np.zeros((40, 40, 3), dtype=np.uint8), None, "push the button")
    with_dt = np.asarray(compose_frame(np.zeros((40, 40, 3), dtype=np.uint8), None, "push the button", delta_t=10))
    assert np.array_equal(np.asarray(film.frames[0]), with_dt) == (delta_t == 10)


def test_a_filmed_chain_of_a_real_checkpoint_is_a_labelled_gif(tmp_path):
    factory = LocalVLAFactory(str(write_tiny_checkpoint(tmp_path / "model")))
    chain = get_sequences(1000)[0]
    with PlayTableEnv("D") as env:
        policy = factory([env])
        assert policy.preview_delta_t == TINY.delta_t
        [outcome] = [e for e in drive_chains([env], policy, [(0, chain)], ep_len=4, film=lambda index: True)
                     if isinstance(e, ChainOutcome)]
    gif = Image.open(io.BytesIO(outcome.video))
    first = np.asarray(gif.convert("RGB"))
    side = first.shape[1] // 2 - 1
    assert first.shape[0] == LABEL_HEIGHT + side + CAPTION_HEIGHT and gif.n_frames >= 1
    assert has_text(first[:LABEL_HEIGHT, :side], background="dark")
    assert has_text(first[:LABEL_HEIGHT, side + 2:], background="dark")

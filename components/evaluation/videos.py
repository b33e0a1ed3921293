"""Rollout videos: the static camera frame beside the future frame the model predicted, as an animated GIF.

A `RolloutFilm` is fed every control step of one chain; it keeps every `stride`-th step (at most
`max_frames`), draws the instruction under the two panels, and encodes a GIF with pillow. The
predicted frame is the VQ-decoded future frame of the last replan (held for the chunk); a policy that
predicts no frames (a scripted expert) gets a blank panel labelled so.

    film = RolloutFilm()
    film.add(obs["rgb_obs"]["rgb_static"], policy.preview(slot), instruction)
    Path("chain_0000.gif").write_bytes(film.gif())
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

CONTROL_HZ = 30
CAPTION_HEIGHT = 14


class RolloutFilm:
    """Frames of one rollout: camera | predicted future, with the current instruction as a caption."""

    def __init__(self, stride: int = 4, max_frames: int = 450) -> None:
        """Keep every `stride`-th step (30 Hz / stride in the GIF), at most `max_frames` frames."""
        if stride < 1 or max_frames < 1:
            raise ValueError(f"stride and max_frames must be >= 1, got {stride}, {max_frames}")
        self.stride, self.max_frames = stride, max_frames
        self.frames: list[Image.Image] = []
        self._step = 0

    def add(self, camera: np.ndarray, predicted: np.ndarray | None, caption: str) -> None:
        """One control step: (H, W, 3) uint8 camera frame, (S, S, 3) uint8 prediction or None."""
        keep = self._step % self.stride == 0 and len(self.frames) < self.max_frames
        self._step += 1
        if keep:
            self.frames.append(compose_frame(camera, predicted, caption))

    def gif(self) -> bytes:
        """The animated GIF (loops forever)."""
        if not self.frames:
            raise ValueError("no frames recorded")
        buffer = io.BytesIO()
        first, *rest = [frame.quantize(colors=256, method=Image.Quantize.MEDIANCUT) for frame in self.frames]
        first.save(buffer, format="GIF", save_all=True, append_images=rest, loop=0,
                   duration=round(1000 * self.stride / CONTROL_HZ))
        return buffer.getvalue()


def compose_frame(camera: np.ndarray, predicted: np.ndarray | None, caption: str) -> Image.Image:
    """Camera and prediction side by side at the camera's size, the caption in a strip below."""
    if camera.ndim != 3 or camera.shape[2] != 3 or camera.dtype != np.uint8:
        raise ValueError(f"camera frame: expected (H, W, 3) uint8, got {camera.dtype} {camera.shape}")
    height, width = camera.shape[:2]
    canvas = Image.new("RGB", (2 * width + 2, height + CAPTION_HEIGHT), "black")
    canvas.paste(Image.fromarray(camera), (0, 0))
    draw = ImageDraw.Draw(canvas)
    if predicted is None:
        draw.text((width + 8, height // 2 - 6), "no predicted frame", fill="gray")
    else:
        canvas.paste(Image.fromarray(predicted).resize((width, height), Image.Resampling.NEAREST), (width + 2, 0))
    draw.text((2, height + 1), caption[: (2 * width) // 6], fill="white")
    return canvas

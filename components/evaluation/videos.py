"""Rollout videos: the static camera frame beside the future frame the model predicted, as an animated GIF.

A `RolloutFilm` is fed every control step of one chain; it keeps every `stride`-th step (at most
`max_frames`), names the two panels above them ("camera (now)", "predicted (replan + dt steps)"), draws the
instruction under them, and encodes a GIF with pillow. The predicted frame is the VQ-decoded future frame
of the last replan (held for the chunk); a policy that predicts no frames (a scripted expert) gets a blank
panel labelled so.

    film = RolloutFilm(delta_t=10)
    film.add(obs["rgb_obs"]["rgb_static"], policy.preview(slot), instruction)
    Path("chain_0000.gif").write_bytes(film.gif())
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

CONTROL_HZ = 30
CAPTION_HEIGHT = 14
LABEL_HEIGHT = 14  # the panel names above the frames


class RolloutFilm:
    """Frames of one rollout: camera | predicted future, with the current instruction as a caption."""

    def __init__(self, stride: int = 4, max_frames: int = 450, *, delta_t: int | None = None) -> None:
        """Keep every `stride`-th step (30 Hz / stride in the GIF), at most `max_frames` frames.

        `delta_t`: control steps between a replan's observation and the future frame it predicts (the
        model's `delta_t`), named in the prediction panel's label; None leaves it out.
        """
        if stride < 1 or max_frames < 1:
            raise ValueError(f"stride and max_frames must be >= 1, got {stride}, {max_frames}")
        self.stride, self.max_frames, self.delta_t = stride, max_frames, delta_t
        self.frames: list[Image.Image] = []
        self._step = 0

    def add(self, camera: np.ndarray, predicted: np.ndarray | None, caption: str) -> None:
        """One control step: (H, W, 3) uint8 camera frame, (S, S, 3) uint8 prediction or None."""
        keep = self._step % self.stride == 0 and len(self.frames) < self.max_frames
        self._step += 1
        if keep:
            self.frames.append(compose_frame(camera, predicted, caption, delta_t=self.delta_t))

    def gif(self) -> bytes:
        """The animated GIF (loops forever)."""
        if not self.frames:
            raise ValueError("no frames recorded")
        buffer = io.BytesIO()
        first, *rest = [frame.quantize(colors=256, method=Image.Quantize.MEDIANCUT) for frame in self.frames]
        first.save(buffer, format="GIF", save_all=True, append_images=rest, loop=0,
                   duration=round(1000 * self.stride / CONTROL_HZ))
        return buffer.getvalue()


def compose_frame(camera: np.ndarray, predicted: np.ndarray | None, caption: str, *,
                  delta_t: int | None = None) -> Image.Image:
    """Camera and prediction side by side at the camera's size, their names above, the caption in a strip below.

    Returns:
        (LABEL_HEIGHT + H + CAPTION_HEIGHT, 2 W + 2) RGB image; the camera frame at (0, LABEL_HEIGHT).
    """
    if camera.ndim != 3 or camera.shape[2] != 3 or camera.dtype != np.uint8:
        raise ValueError(f"camera frame: expected (H, W, 3) uint8, got {camera.dtype} {camera.shape}")
    height, width = camera.shape[:2]
    canvas = Image.new("RGB", (2 * width + 2, LABEL_HEIGHT + height + CAPTION_HEIGHT), "black")
    canvas.paste(Image.fromarray(camera), (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    ahead = "" if delta_t is None else f" (replan + {delta_t} steps)"
    draw.text((width // 2, 2), "camera (now)", fill="white", anchor="ma")
    draw.text((width + 2 + width // 2, 2), f"predicted{ahead}", fill="white", anchor="ma")
    if predicted is None:
        draw.text((width + 8, LABEL_HEIGHT + height // 2 - 6), "no predicted frame", fill="gray")
    else:
        frame = Image.fromarray(predicted).resize((width, height), Image.Resampling.NEAREST)
        canvas.paste(frame, (width + 2, LABEL_HEIGHT))
    draw.text((2, LABEL_HEIGHT + height + 1), caption[: (2 * width) // 6], fill="white")
    return canvas

"""Predicted-vs-true future-frame grids for MLflow: what the prediction head has learned, at a glance.

Each row is one robot sample; the columns are the current frame, the frame the model predicts `delta_t`
steps ahead and the true future frame, all three decoded from VQ codes by the frozen tokenizer (so they
differ only by what the model got right, not by tokenizer loss). Views stack vertically within a row.
The picture says so itself: a title (what, which stage and step, dt), a title over each column and a
label (sample, camera) beside each view (components/core/picture_labels.py).

    grid = prediction_grid(model, robot_batch, stage="tune", step=500)      # (H, W, 3) uint8
    log.log_image(grid, "frames/tune_step_000500.png")
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from components.core.picture_labels import label_grid, slot_centres
from model.batches import RobotBatch
from model.vla import VLAModel

PAD = 2  # pixels of white between tiles
SCALE = 2  # nearest-neighbour upscaling of each tile (64 px frames are too small to read in the MLflow UI)
# camera of each view, in the order the model stacks them (model.num_views: 1 = static, 2 = static + gripper)
VIEW_NAMES = ("static cam", "gripper cam")


def to_uint8(images: Tensor) -> np.ndarray:
    """(..., 3, S, S) images in [-1, 1] -> (..., S, S, 3) uint8."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.movedim(-3, -1).cpu().numpy()


def tile(rows: list[list[np.ndarray]], scale: int = SCALE) -> np.ndarray:
    """Lay out equally sized (h, w, 3) tiles row by row with white gaps, each enlarged `scale` times."""
    rows = [[image.repeat(scale, axis=0).repeat(scale, axis=1) for image in row] for row in rows]
    h, w = rows[0][0].shape[:2]
    n_rows, n_cols = len(rows), len(rows[0])
    out = np.full((n_rows * (h + PAD) + PAD, n_cols * (w + PAD) + PAD, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = PAD + r * (h + PAD), PAD + c * (w + PAD)
            out[top:top + h, left:left + w] = image
    return out


@torch.no_grad()
def prediction_grid(model: VLAModel, batch: RobotBatch, *, bf16: bool = True, max_rows: int = 4,
                    stage: str | None = None, step: int | None = None) -> np.ndarray:
    """Current | predicted future | true future, one row per sample (up to `max_rows`), titled and labelled.

    Args:
        model: the unwrapped model (its VQ decoder renders the codes; its `cfg.delta_t` goes in the labels).
        batch: robot samples with `future_codes` (training targets).
        bf16: predict under bf16 autocast.
        max_rows: samples shown.
        stage: training stage named in the title ("pretrain", "tune"), if known.
        step: optimiser step named in the title, if known.

    Returns:
        (H, W, 3) uint8 image: the tiles of `tile` below a title and column titles, right of the row labels.
    """
    if batch.future_codes is None:
        raise ValueError("prediction_grid: the batch has no future_codes to compare against")
    n = min(max_rows, batch.current_codes.shape[0])
    inputs = RobotBatch(batch.instruction_ids[:n], batch.current_codes[:n],
                        scene_pixels=None if batch.scene_pixels is None else batch.scene_pixels[:n],
                        description_ids=None if batch.description_ids is None else batch.description_ids[:n])
    predicted = model.predict(inputs, bf16=bf16, with_actions=False).future_codes
    columns = [model.decode_codes(codes) for codes in (inputs.current_codes, predicted, batch.future_codes[:n])]
    pictures = [to_uint8(images) for images in columns]  # each (n, V, S, S, 3)
    rows = [[np.concatenate(list(pictures[c][i]), axis=0) for c in range(3)] for i in range(n)]
    return label_prediction_grid(tile(rows), samples=n, views=pictures[0].shape[1], delta_t=model.cfg.delta_t,
                                 stage=stage, step=step)


def label_prediction_grid(grid: np.ndarray, *, samples: int, views: int, delta_t: int, stage: str | None = None,
                          step: int | None = None) -> np.ndarray:
    """Title, column titles and a (sample, camera) label per view around a `tile`d prediction grid."""
    when = " ".join(part for part in (stage, None if step is None else f"step {step}") if part)
    title = (f"Future-frame prediction{f' at {when}' if when else ''}: current frame, model prediction and "
             f"true frame dt = {delta_t} control steps ahead (clamped to the episode end), all VQ-decoded")
    heads = ["current frame (t)", f"predicted (t+{delta_t})", f"true future (t+{delta_t})"]
    sample_height = (grid.shape[0] - PAD) / samples  # one sample's views plus the gap below them
    view_height = (sample_height - PAD) / views
    labels = [(PAD + i * sample_height + (v + 0.5) * view_height, f"sample {i}\n{VIEW_NAMES[v]}")
              for i in range(samples) for v in range(views)]
    return label_grid(grid, title=title, columns=list(zip(slot_centres(grid.shape[1], 3, PAD), heads, strict=True)),
                      rows=labels)

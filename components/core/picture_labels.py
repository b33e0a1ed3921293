"""Titles and labels on the image grids the stages log, so that each picture says what it shows.

`label_grid` puts a white band on top (a title, then a title over each column) and one on the left (a
label beside each row) around an (H, W, 3) uint8 grid, in black with Pillow's built-in default font (no
font file). `slot_centres` gives the centres of equal tiles along one side of a grid, to place them.

    grid = label_grid(tiles, title="VQ reconstructions, step 500",
                      columns=list(zip(slot_centres(tiles.shape[1], 8), [f"frame {i}" for i in range(8)])),
                      rows=list(zip(slot_centres(tiles.shape[0], 2), ["original", "reconstruction"])))

The default font has Latin glyphs only (no Greek): write "dt", not the Greek letter.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MARGIN = 4  # pixels of white around text
INK = (0, 0, 0)
PAPER = (255, 255, 255)


@cache
def default_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's embedded default font (about 10 px; a FreeType font when Pillow has FreeType)."""
    return ImageFont.load_default()


def line_height() -> int:
    """Pixels from one text line to the next."""
    left, top, right, bottom = default_font().getbbox("Ag|")
    return bottom - top + 3


def text_width(text: str) -> int:
    """Width in pixels of one line of text."""
    return int(np.ceil(default_font().getlength(text)))


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` pixels (greedy at spaces; a single longer word stays whole); a newline breaks too."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and text_width(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def slot_centres(length: int, count: int, pad: int = 0) -> list[float]:
    """Centres of `count` equal tiles along a side of `length` pixels laid out as pad, tile, pad, ..., tile, pad."""
    step = (length - pad) / count
    return [pad + i * step + (step - pad) / 2 for i in range(count)]


def label_grid(grid: np.ndarray, *, title: str, columns: Sequence[tuple[float, str]] = (),
               rows: Sequence[tuple[float, str]] = ()) -> np.ndarray:
    """`grid` below a title and column titles, right of the row labels.

    Args:
        grid: (H, W, 3) uint8 image.
        title: what the grid shows (wrapped to the output's width; a newline starts a new line).
        columns: (x centre in `grid` pixels, title) per column; a title is wrapped to the column's width.
        rows: (y centre in `grid` pixels, label) per row; a newline splits a label into lines.

    Returns:
        (H + top, left + W, 3) uint8: the grid occupies the bottom-right (H, W) corner unchanged.
    """
    if grid.ndim != 3 or grid.shape[2] != 3 or grid.dtype != np.uint8:
        raise ValueError(f"label_grid: expected an (H, W, 3) uint8 grid, got {grid.dtype} {grid.shape}")
    height, width = grid.shape[:2]
    step = line_height()
    row_lines = [(y, label.split("\n")) for y, label in rows]
    left = max((text_width(line) for _, lines in row_lines for line in lines), default=-2 * MARGIN) + 2 * MARGIN
    column_width = min((b - a for (a, _), (b, _) in zip(columns, columns[1:], strict=False)), default=width)
    column_lines = [(x, wrap(text, max(1, int(column_width) - MARGIN))) for x, text in columns]
    title_lines = wrap(title, left + width - 2 * MARGIN) if title else []
    column_band = max((len(lines) for _, lines in column_lines), default=0) * step
    top = MARGIN + len(title_lines) * step + column_band + (MARGIN if column_band else 0)
    canvas = Image.new("RGB", (left + width, top + height), PAPER)
    canvas.paste(Image.fromarray(grid), (left, top))
    draw = ImageDraw.Draw(canvas)
    font = default_font()
    for i, line in enumerate(title_lines):
        draw.text((MARGIN, MARGIN + i * step), line, fill=INK, font=font)
    for x, lines in column_lines:
        first = top - MARGIN - len(lines) * step
        for i, line in enumerate(lines):
            draw.text((left + x, first + i * step), line, fill=INK, font=font, anchor="ma")
    for y, lines in row_lines:
        first = top + y - len(lines) * step / 2
        for i, line in enumerate(lines):
            draw.text((MARGIN, first + i * step), line, fill=INK, font=font, anchor="la")
    return np.asarray(canvas)

"""Titles, column titles and row labels drawn around an image grid with the default font."""

from __future__ import annotations

import numpy as np
import pytest

from components.core.picture_labels import label_grid, slot_centres, wrap
from tests.fixtures.pictures import has_text, label_bands

GRID = np.full((2 * 40, 3 * 50, 3), 128, dtype=np.uint8)  # 2 rows x 3 columns of 40 x 50 px tiles


def labelled(title="a grid", **kwargs):
    columns = list(zip(slot_centres(GRID.shape[1], 3), ["left", "middle", "right"], strict=True))
    rows = list(zip(slot_centres(GRID.shape[0], 2), ["row 0", "row 1\nsecond line"], strict=True))
    return label_grid(GRID, title=title, **{"columns": columns, "rows": rows, **kwargs})


def test_the_grid_sits_unchanged_below_the_titles_and_right_of_the_row_labels():
    picture = labelled()
    header, left, grid = label_bands(picture, GRID.shape)
    assert picture.dtype == np.uint8 and np.array_equal(grid, GRID)
    assert has_text(header) and has_text(left)
    for c in range(3):  # a title over every column, a label beside every row
        assert has_text(header[-14:, left.shape[1] + 50 * c: left.shape[1] + 50 * (c + 1)])
    for r in range(2):
        assert has_text(left[40 * r: 40 * (r + 1)])


def test_a_long_title_wraps_to_the_pictures_width_instead_of_widening_it():
    short, long = labelled(), labelled(title="what the grid shows, at which step and how far ahead " * 3)
    assert long.shape[1] == short.shape[1] and long.shape[0] > short.shape[0]


def test_without_columns_or_rows_only_the_title_band_is_added():
    picture = label_grid(GRID, title="just a title")
    assert picture.shape[1] == GRID.shape[1] and picture.shape[0] > GRID.shape[0]
    assert np.array_equal(picture[-GRID.shape[0]:], GRID) and has_text(picture[:-GRID.shape[0]])


def test_slot_centres_follow_the_padded_layout():
    assert slot_centres(3 * (10 + 2) + 2, 3, pad=2) == [7, 19, 31]
    assert slot_centres(100, 2) == [25, 75]


def test_wrap_breaks_at_spaces_and_newlines():
    assert wrap("one two\nthree", 10_000) == ["one two", "three"]
    assert wrap("one two three", 1) == ["one", "two", "three"]


def test_a_grid_that_is_not_rgb_uint8_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        label_grid(GRID.astype(np.float32), title="x")

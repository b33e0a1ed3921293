"""The ablation tables' statistics: Wilson intervals, bootstrap over chains, paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from components.experiments.intervals import bootstrap_mean, overlap, paired_difference, separated, wilson


def test_wilson_matches_the_textbook_values_and_stays_inside_0_1():
    low, high = wilson(17, 20)
    assert (round(low, 3), round(high, 3)) == (0.640, 0.948)
    assert wilson(0, 20)[0] == 0.0 and 0.15 < wilson(0, 20)[1] < 0.17  # 0/20 still leaves up to ~16%
    assert wilson(20, 20)[1] == 1.0 and wilson(20, 20)[0] > 0.8
    assert wilson(108, 160)[1] - wilson(108, 160)[0] < wilson(13, 20)[1] - wilson(13, 20)[0]  # more trials, narrower
    for bad in ((21, 20), (-1, 20), (0, 0)):
        with pytest.raises(ValueError, match="wilson"):
            wilson(*bad)


def test_bootstrap_interval_contains_the_mean_and_is_reproducible():
    lengths = [0, 1, 0, 2, 0, 0, 1, 3, 0, 1] * 4
    mean, low, high = bootstrap_mean(lengths)
    assert mean == pytest.approx(np.mean(lengths)) and low < mean < high
    assert (mean, low, high) == bootstrap_mean(lengths)  # seeded
    assert bootstrap_mean([2] * 10) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="no values"):
        bootstrap_mean([])


def test_paired_difference_separates_a_consistent_gain_that_unpaired_intervals_cannot():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 4, size=64)
    better = base + (rng.random(64) < 0.3)  # the same chains, one more subtask on ~30% of them
    diff, low, high = paired_difference(better, base)
    assert diff > 0 and separated(low, high)
    assert overlap(bootstrap_mean(better)[1:], bootstrap_mean(base)[1:])  # separately, the intervals overlap
    assert not separated(*paired_difference(base, base)[1:])
    with pytest.raises(ValueError, match="same non-empty items"):
        paired_difference([1, 2], [1])

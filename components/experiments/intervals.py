"""95% intervals for the ablation tables: Wilson for success rates, bootstrap over chains for average length.

Every variant of an ablation is evaluated on the same CALVIN chains and the same single-task trial starts
(components/experiments/ablations.py), so a comparison with the full model is paired: `paired_difference`
resamples the chains once for both variants and gives the interval of the difference in average length,
which is narrower than two separate intervals when the variants succeed on the same easy chains.

    wilson(17, 20)                       # (0.64, 0.95)
    bootstrap_mean([0, 1, 3, 0, 2])      # (mean, low, high)
    paired_difference(full, other)       # (difference, low, high) of mean(full) - mean(other)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
RESAMPLES = 10_000


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a success rate (sound at 0/n and n/n, unlike the normal approximation).

    Raises:
        ValueError: trials < 1 or successes outside 0..trials.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"wilson: need 0 <= successes <= trials and trials >= 1, got {successes} / {trials}")
    p, z2 = successes / trials, z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    picks = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    return values[picks].mean(axis=1)


def bootstrap_mean(values: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """The mean of `values` (e.g. completed subtasks per chain) and its 95% percentile-bootstrap interval."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("bootstrap_mean: no values")
    means = _resampled_means(data, resamples, seed)
    return float(data.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def paired_difference(first: Sequence[float], second: Sequence[float], *, resamples: int = RESAMPLES,
                      seed: int = 0) -> tuple[float, float, float]:
    """mean(first) - mean(second) over the same items (chain i in both), with its 95% paired-bootstrap interval.

    Raises:
        ValueError: the two lists differ in length (they are not the same chains) or are empty.
    """
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.size == 0 or a.shape != b.shape:
        raise ValueError(f"paired_difference: need the same non-empty items in both, got {a.size} and {b.size}")
    return bootstrap_mean(a - b, resamples=resamples, seed=seed)


def separated(low: float, high: float) -> bool:
    """Whether an interval of a difference excludes 0."""
    return low > 0 or high < 0


def overlap(first: tuple[float, float], second: tuple[float, float]) -> bool:
    """Whether two intervals share a point."""
    return first[0] <= second[1] and second[0] <= first[1]

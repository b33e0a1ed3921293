"""Thin entry points: DVC stage commands, ablations, sweeps, robot evaluation. Nothing imports this package."""

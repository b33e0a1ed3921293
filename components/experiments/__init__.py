"""Table-1/3 ablations and the stage-2 sweep, on Ray."""

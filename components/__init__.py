"""One plain function per pipeline stage plus the shared pieces (typed config, data, checkpoints, MLflow tracking)."""

"""Shared by every stage: the typed config, MLflow tracking, the Ray connection, checkpoint references."""

"""The `report` stage: tables, plots and frame grids under reports/ and in MLflow."""

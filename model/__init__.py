"""UP-VLA model: nn.Modules and their config dataclasses. No I/O beyond checkpoint folders, no Ray, no MLflow."""

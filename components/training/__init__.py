"""The `pretrain` and `tune` stages: the training loop on Ray Train, its state, steps and inputs."""

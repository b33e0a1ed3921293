"""Cluster plumbing: Ray cluster configs, runtime env, submitit/SLURM launchers. No learning logic."""

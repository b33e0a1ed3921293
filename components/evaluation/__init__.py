"""The `evaluate` stage and the policy: CALVIN rollouts on Ray actors, results log, task trials."""

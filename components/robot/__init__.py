"""Real-robot evaluation: operator-in-the-loop trials on a Franka."""

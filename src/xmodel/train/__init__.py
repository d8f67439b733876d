"""Training: schedules, batch plan, checkpoints, distributed wrapping and the training loop."""

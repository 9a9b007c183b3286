"""The training loop and what it leans on: precision, checkpoints, schedules, DDP."""

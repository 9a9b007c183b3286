"""Tasks: what differs between problems (loss, metrics, figures, samples)."""

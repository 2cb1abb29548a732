"""Training: trainer, optimizer and schedule, checkpoints, logging, parallel wrapping."""

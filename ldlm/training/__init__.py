"""Layer 6: the training loop, its optimiser step, batches, stopping and logging."""

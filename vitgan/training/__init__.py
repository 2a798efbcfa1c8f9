"""Training: losses, DiffAugment, the loop, checkpoints."""

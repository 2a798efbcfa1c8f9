"""Metrics: the Frechet distance, an offline digit FID for the bundled MNIST digits, and StackedMNIST's modes."""

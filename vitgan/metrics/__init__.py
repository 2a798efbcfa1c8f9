"""Metrics: the Frechet distance, and an offline digit FID for the bundled MNIST digits."""

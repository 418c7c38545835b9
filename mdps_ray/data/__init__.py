"""Inputs: dataset layouts and manifests, image decoding with limits, the holdout rule, synthetic data."""

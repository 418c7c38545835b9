"""The method in one process on one device: the scorer, calibration on normal images, prior training."""

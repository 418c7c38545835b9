"""I/O: URIs (fsspec/s3fs), images, dataset layouts, checkpoints and weights."""

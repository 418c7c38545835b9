"""Storage: URIs (fsspec), model artefacts (safetensors), weights, train state, result rows, run directories."""

"""Benchmarks: each file is a script (`python benchmarks/<name>.py`) and importable as benchmarks.<name> in tests."""

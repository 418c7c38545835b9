"""Test doubles shared by the tests and the benchmarks; never used by a job a user runs."""

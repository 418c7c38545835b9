"""Across runs: trends and drift night by night, and comparing two runs (what `mdps trend` and `mdps compare` print)."""

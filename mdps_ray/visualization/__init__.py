"""Visualization: the self-contained HTML report of a run and small SVG/PNG plots."""

"""Orchestration: the only package that imports Ray (Ray Data scoring, Ray Train training)."""

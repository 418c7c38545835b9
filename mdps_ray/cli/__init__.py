"""The ``mdps`` command line and its presentation (tables, schemas, the demo)."""

from mdps_ray.cli.commands import main

__all__ = ["main"]

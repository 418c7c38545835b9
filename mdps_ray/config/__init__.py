"""Configuration: the method (frozen pydantic models), its presets, job configs, and the one override path."""

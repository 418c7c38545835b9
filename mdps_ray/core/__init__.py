"""Pure MDPS maths: tensors in, tensors out.

Nothing in this package does I/O, reads a config object, names a device or imports Ray.
Randomness comes in as per-row generators (:class:`~mdps_ray.core.noise.RowNoise`).
"""

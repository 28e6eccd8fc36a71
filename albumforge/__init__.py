"""Albumforge's own package: where the shipped data is found (``albumforge.resources``).

The code lives in the top-level packages ``director``, ``actors``, ``ray_jobs`` and
``catalog``; this package holds what is neutral to all of them.
"""

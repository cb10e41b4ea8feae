"""Numba kernels (installed as apex_fast.kernels)."""

"""Simulation: compile a plan into step-cost tables, run the batching kernels, route requests."""

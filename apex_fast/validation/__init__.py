"""Validation against measured serving runs: bundled data, replay, fit and error bands."""

"""Bundled public measurements of serving engines (see README.md in this folder)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PUBLISHED_MEASUREMENTS = "published_measurements.csv"


def published_measurements_path() -> Path:
    """Path of the bundled CSV of published serving measurements."""
    return Path(str(resources.files(__package__).joinpath(PUBLISHED_MEASUREMENTS)))

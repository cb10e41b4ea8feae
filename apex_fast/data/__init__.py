"""Bundled public measurements of serving engines (see README.md in this folder)."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

PUBLISHED_MEASUREMENTS = "published_measurements.csv"

# numeric columns of published_measurements.csv (empty cell = not given by the source): the
# setup, then the measured figures
_SETUP_COLUMNS = (
    "num_gpus",
    "tp",
    "pp",
    "dp",
    "ep",
    "input_len",
    "output_len",
    "num_prompts",
    "max_concurrency",
    "random_range_ratio",
    "client_seed",
    "total_input_tokens",
    "total_output_tokens",
)
# the measured figures among them (a row gives at least one)
MEASURED_COLUMNS = (
    "ttft_mean_ms",
    "ttft_median_ms",
    "tpot_mean_ms",
    "tpot_median_ms",
    "itl_mean_ms",
    "itl_median_ms",
    "e2e_median_ms",
    "output_tok_s",
    "request_s",
    "total_tok_s",
)
NUMERIC_COLUMNS = (*_SETUP_COLUMNS, *MEASURED_COLUMNS)


def published_measurements_path() -> Path:
    """Path of the bundled CSV of published serving measurements."""
    return Path(str(resources.files(__package__).joinpath(PUBLISHED_MEASUREMENTS)))


def published_measurements(engine_profile: str | None = None) -> list[dict]:
    """The published measurements, numbers parsed (None where the source gives none);
    `request_rate` stays a string ('inf' or a number). Optionally one engine profile's rows."""
    with published_measurements_path().open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        if engine_profile is not None and r["engine_profile"] != engine_profile:
            continue
        rec: dict = dict(r)
        for c in NUMERIC_COLUMNS:
            rec[c] = float(r[c]) if r[c] != "" else None
        out.append(rec)
    return out

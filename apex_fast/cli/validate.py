"""`apex.py validate`: replay the bundled measured runs and the published measurements, print
the errors (the replay itself is apex_fast/validation/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from apex_fast.cli import options as o
from apex_fast.cli.checks import check_output_path
from apex_fast.errors import ApexError

ReferenceDir = Annotated[
    Path | None,
    typer.Option(
        "--reference-dir",
        help="Rebuild the runs from this reference folder instead of the bundled data.",
    ),
]


def validate(reference_dir: ReferenceDir = None, json_path: o.JsonPath = None) -> None:
    """Replay the measured vLLM 0.6 runs (8x H100; Llama-3.1-70B bf16, Mistral-Large FP8):
    in-sample and leave-one-family-out errors; then the published measurements of every
    engine (out of sample)."""
    if json_path is not None:
        check_output_path(json_path, "--json")
    if reference_dir is not None and not reference_dir.exists():
        raise ApexError(f"reference folder {reference_dir} does not exist")
    import orjson

    from apex_fast.validation.command import render, summary, validate_runs
    from apex_fast.validation.published import per_engine_summary, render_published, replay
    from apex_fast.validation.runs import bundled_runs, reference_runs

    runs = reference_runs(reference_dir) if reference_dir is not None else list(bundled_runs())
    rows = validate_runs(runs)
    summ = summary(rows)
    typer.echo(render(rows, summ))
    pub_rows = replay()
    pub = per_engine_summary(pub_rows)
    typer.echo("")
    typer.echo(render_published(pub))
    if json_path is not None:
        data = {
            "runs": rows,
            "mean_abs_error": summ,
            "published": pub_rows,
            "published_summary": pub,
        }
        opts = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
        json_path.write_bytes(orjson.dumps(data, option=opts) + b"\n")

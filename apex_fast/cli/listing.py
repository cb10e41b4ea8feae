"""`apex.py models` and `apex.py gpus` (the texts come from apex_fast.listing, which the entry
point also prints directly for the plain command lines)."""

from __future__ import annotations

from typing import Annotated

import typer

from apex_fast.listing import gpus_text, models_text

JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON records for tools.")]


def models(json_out: JsonOut = False) -> None:
    """List the bundled models with their parameter counts."""
    typer.echo(models_text(json_out))


def gpus(json_out: JsonOut = False) -> None:
    """List the known devices with their datasheet numbers."""
    typer.echo(gpus_text(json_out))

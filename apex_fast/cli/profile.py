"""`apex.py profile`: measure GEMM/attention times here and write APEX+ profile tables (the
measurement is apex_fast/profiles/collect.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from apex_fast.cli import options as o

Backend = Annotated[
    str, typer.Option(help="cpu (NumPy), or a GPU device name (needs PyTorch with CUDA).")
]
Out = Annotated[
    Path, typer.Option(help="Profile root to write (comp/<backend>/, comm/<backend>/).")
]
Quick = Annotated[bool, typer.Option(help="Small grid and short timing (well under a minute).")]
ProfileDtype = Annotated[
    str | None, typer.Option(help="Data type to measure (cpu: float; CUDA: half or float).")
]
MinTime = Annotated[
    float | None,
    o.real("Seconds of repeated calls per point (default 0.005 quick, 0.02 full).", min=0),
]
NoAttention = Annotated[bool, typer.Option(help="Skip the attention table.")]


def profile(
    backend: Backend = "cpu",
    out: Out = Path("out/prof"),
    quick: Quick = False,
    dtype: ProfileDtype = None,
    min_time: MinTime = None,
    no_attention: NoAttention = False,
) -> None:
    """Measure GEMM and attention (and, under torchrun, collective) times; write APEX+ tables."""
    from apex_fast.profiles.collect import run_profile

    written = run_profile(
        backend,
        out,
        quick=quick,
        dtype=dtype,
        min_time=min_time,
        attention=not no_attention,
        progress=sys.stderr.isatty(),
    )
    for what, path in written.items():
        typer.echo(f"{what}: {path}")

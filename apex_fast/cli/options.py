"""Every command-line option shared by two or more commands, declared once.

Each alias is an `Annotated` type a command uses as a parameter annotation; the command gives
only the default (`num_nodes: NumNodes = 1`). Ranges are Typer's own checks (`min=`, `max=`);
choices are Enums. A float option also passes `finite` (NaN is a number to Python, and to some
Typer versions a NaN inside a range). Open interval ends (`> 0`) are checked where the value is
used (the domain modules), so library callers get the same one-line errors.

This module imports only Typer and the light registries whose names become choices (engines,
dtypes): nothing numerical, so `--help` and the checks that run before a search stay quick.
"""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from apex_fast.dtypes import WEIGHT_ONLY, dtype_aliases
from apex_fast.engines import ENGINE_NAMES

# Longest SLO accepted, in ms (one hour): a larger value is a typing mistake, and the capacity
# search would have to simulate traffic over many times that span to see overload.
MAX_SLO_MS = 3_600_000.0
MAX_SPECULATIVE_TOKENS = 16  # as sim/speculative.py (SpeculativeConfig.validate)
MAX_HASH_BLOCK = 1_048_576  # tokens per hash id of `trace --kind multiturn`


def finite(value: float | None) -> float | None:
    """Typer callback of float options: NaN and +-inf are not values a flag may take."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def not_nan(value: float | None) -> float | None:
    """Typer callback of float options where inf means something (a rate: all at once)."""
    if value is not None and math.isnan(value):
        raise typer.BadParameter("must be a number, got nan")
    return value


def real(
    help: str,
    *names: str,
    min: float | None = None,
    max: float | None = None,
    inf: bool = False,
) -> typer.models.OptionInfo:
    """A float option: Typer's range check (closed ends), NaN refused, inf only if `inf`."""
    return typer.Option(*names, min=min, max=max, callback=not_nan if inf else finite, help=help)


# ------------------------------------------------------------------------------- choices
# The names are those the domain modules accept; tests/test_cli_options.py checks that each
# Enum lists exactly the domain's tuple (search.OBJECTIVES, disagg.deployment.MODES, ...), so the
# choices cannot drift apart while the CLI stays free of their imports.
def _choices(name: str, values: tuple[str, ...] | list[str]) -> type[Enum]:
    return Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


Objective = _choices("Objective", ("latency", "throughput", "energy", "cost"))
Engine = _choices("Engine", ENGINE_NAMES)
Mode = _choices("Mode", ("agg", "disagg", "both"))
Router = _choices("Router", ("round-robin", "prefix"))
SpeculativeMethod = _choices("SpeculativeMethod", ("draft", "eagle", "ngram", "mtp"))
LengthDist = _choices(
    "LengthDist", ("fixed", "uniform", "lognormal", "lmsys", "creation", "summarization")
)
TraceKind = _choices("TraceKind", (*LengthDist.__members__, "multiturn"))
# dtypes: the canonical names and their aliases (bf16, fp8, ...); weights also take the
# weight-only formats
WeightDtype = _choices("WeightDtype", dtype_aliases(allow_int=True))
Dtype = _choices("Dtype", dtype_aliases(allow_int=False))
_DTYPES = "float, half, float8"
_WEIGHT_DTYPES = f"{_DTYPES} ({', '.join(WEIGHT_ONLY)})"


def value(choice: Enum | None) -> str | None:
    """The string of a choice (None stays None)."""
    return None if choice is None else str(choice.value)


# -------------------------------------------------------------------- model and cluster
Model = Annotated[
    str,
    typer.Option(
        "--model",
        help="Bundled model name (see `apex.py models`), HF id, or path to a config.json.",
    ),
]
GpusPerNode = Annotated[
    int,
    typer.Option(
        "--num-gpus-per-node", "--num-gpus", min=1, help="GPUs per node (alias --num-gpus)."
    ),
]
NumNodes = Annotated[int, typer.Option(min=1, help="Number of nodes.")]
Gpu = Annotated[str, typer.Option(help="GPU type (see `apex.py gpus`).")]
Frequency = Annotated[int, typer.Option(min=0, help="SM clock in MHz (0 = default boost clock).")]
InterNodeBandwidth = Annotated[
    float | None,
    real(
        "Inter-node network bandwidth in GB/s per GPU per direction (e.g. 50 for one "
        "400 Gb/s NIC per GPU); default: the reference system in `apex.py gpus`.",
        min=0,
    ),
]

# ------------------------------------------------------------------------------- pins
Tp = Annotated[int | None, typer.Option(min=1, help="Pin tensor parallelism.")]
Pp = Annotated[int | None, typer.Option(min=1, help="Pin pipeline stages.")]
Dp = Annotated[int | None, typer.Option(min=1, help="Pin data-parallel replicas.")]
Ep = Annotated[int | None, typer.Option(min=1, help="Pin expert parallelism (MoE).")]

# ----------------------------------------------------------------------- engine settings
EngineName = Annotated[
    Engine,
    typer.Option(
        "--engine",
        case_sensitive=False,
        help="Serving engine (docs/engines.md).",
    ),
]
MaxNumSeqs = Annotated[
    int | None,
    typer.Option(min=1, help="Max running sequences per engine (default: the engine's)."),
]
MaxNumBatchedTokens = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Token budget per step (default: the engine's with chunked prefill, else the "
        "longest request).",
    ),
]
ChunkedPrefill = Annotated[
    bool | None,
    typer.Option(
        "--chunked-prefill/--no-chunked-prefill",
        help="Chunked prefill (default: the engine's).",
    ),
]

# ---------------------------------------------------------------------- dtypes, ranking
# the choices shown are the canonical names; aliases (bf16, fp8, ...) are accepted as well
_DTYPE_METAVAR = "[float|half|float8]"
KvDtype = Annotated[
    Dtype,
    typer.Option(case_sensitive=False, metavar=_DTYPE_METAVAR, help=f"KV cache dtype: {_DTYPES}."),
]
WeightDtypeOpt = Annotated[
    WeightDtype | None,
    typer.Option(
        case_sensitive=False,
        metavar="[float|half|float8|int8|int4|mxfp4]",
        help=f"Weight dtype: {_WEIGHT_DTYPES}; default: the checkpoint's own (FP8 for "
        "DeepSeek-V3/R1), else half.",
    ),
]
ActivationDtype = Annotated[
    Dtype | None,
    typer.Option(
        case_sensitive=False,
        metavar=_DTYPE_METAVAR,
        help=f"Activation dtype: {_DTYPES}; default: as the weights' default.",
    ),
]
ObjectiveOpt = Annotated[
    Objective,
    typer.Option(case_sensitive=False, help="Rank plans by: latency, throughput, energy, cost."),
]

# ------------------------------------------------------------------------------- SLOs
_SLO = " SLO in ms (at most one hour); the report gives the share of requests meeting it."
TtftSlo = Annotated[float | None, real("TTFT" + _SLO, min=0, max=MAX_SLO_MS)]
TpotSlo = Annotated[float | None, real("TPOT" + _SLO, min=0, max=MAX_SLO_MS)]

# ----------------------------------------------------------------------------- workload
TraceFile = Annotated[
    Path | None,
    typer.Option(
        help="Request trace (.jsonl with StartTimeOffset ns, ContextTokens, GeneratedTokens; "
        "Mooncake, vllm bench serve results, Azure CSV)."
    ),
]
PromptLen = Annotated[
    int, typer.Option(min=1, help="Prompt tokens per request (mean; no trace file).")
]
OutputLen = Annotated[
    int, typer.Option(min=1, help="Output tokens per request (mean; no trace file).")
]
NumRequests = Annotated[int, typer.Option(min=1, help="Requests (no trace file).")]
LengthDistOpt = Annotated[
    LengthDist | None,
    typer.Option(
        case_sensitive=False,
        help="Synthetic lengths around the prompt and output lengths: fixed, uniform (with "
        "--random-range-ratio), lognormal; or lmsys, creation, summarization (fitted).",
    ),
]
RandomRangeRatio = Annotated[
    float,
    real(
        "Lengths uniform in [L(1-r), L(1+r)] as vLLM's random dataset; r in [0, 1).", min=0, max=1
    ),
]
Burstiness = Annotated[
    float, real("Gamma shape of the arrival gaps: 1 = Poisson, < 1 = burstier.", min=0)
]
Seed = Annotated[int, typer.Option(min=0, help="Random seed of synthetic arrivals and lengths.")]

# ------------------------------------------------------------------------------ outputs
JsonPath = Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON.")]
Quiet = Annotated[bool, typer.Option(help="No progress output.")]
Debug = Annotated[bool, typer.Option(help="Show tracebacks of internal errors.")]

"""`apex.py trace`: write a synthetic trace (generators and writers: apex_fast/workload/)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from apex_fast.cli import options as o
from apex_fast.cli.checks import check_output_path
from apex_fast.errors import ApexError
from apex_fast.request import PlanRequest as R
from apex_fast.workload.generators import generate
from apex_fast.workload.multiturn import (
    MULTITURN_HASH_BLOCK,
    MULTITURN_THINK_S,
    MULTITURN_TURNS,
    multiturn_trace,
)
from apex_fast.workload.writers import MAX_TRACE_REQUESTS, write_multiturn, write_trace

# StartTimeOffset is an int64 of nanoseconds: a trace may span at most this many seconds
TRACE_MAX_SPAN_S = (2**63 - 1) / 1e9

Kind = Annotated[
    o.TraceKind,
    typer.Option(
        case_sensitive=False,
        help="Lengths: lmsys (chat), creation, summarization (fitted), or fixed, uniform, "
        "lognormal around --prompt-len/--output-len; multiturn: chat conversations whose "
        "turns carry the earlier turns as a shared prefix (hash_ids written).",
    ),
]
Rate = Annotated[
    float,
    o.real(
        "Mean arrival rate, requests per second (> 0; inf: all at 0).",
        "--rate",
        "--request-rate",
        min=0,
        inf=True,
    ),
]
Turns = Annotated[
    float,
    o.real("multiturn: mean turns per conversation (default: LMSYS-Chat-1M's 2.0).", min=1),
]
ThinkTime = Annotated[
    float,
    o.real("multiturn: mean seconds from one turn's arrival to the next (an assumption).", min=0),
]
HashBlockSize = Annotated[
    int,
    typer.Option(min=1, max=o.MAX_HASH_BLOCK, help="multiturn: prompt tokens per hash id written."),
]
Out = Annotated[Path, typer.Option(help="Output .jsonl path.")]


def trace(
    kind: Kind,
    rate: Rate,
    num_requests: o.NumRequests,
    out: Out,
    seed: o.Seed = R.seed,
    burstiness: o.Burstiness = R.burstiness,
    prompt_len: o.PromptLen = R.prompt_len,
    output_len: o.OutputLen = R.output_len,
    random_range_ratio: o.RandomRangeRatio = R.random_range_ratio,
    turns: Turns = MULTITURN_TURNS,
    think_time: ThinkTime = MULTITURN_THINK_S,
    hash_block_size: HashBlockSize = MULTITURN_HASH_BLOCK,
) -> None:
    """Generate a synthetic trace with Poisson or gamma arrivals and fitted length distributions."""
    check_trace_args(rate, num_requests, out)
    name = o.value(kind)
    multi_only = {
        "--turns": turns != MULTITURN_TURNS,
        "--think-time": think_time != MULTITURN_THINK_S,
        "--hash-block-size": hash_block_size != MULTITURN_HASH_BLOCK,
    }
    given = [k for k, v in multi_only.items() if v]
    if given and name != "multiturn":
        raise ApexError(f"{given[0]} applies to --kind multiturn, not {name}")
    if name == "multiturn":
        if random_range_ratio:
            raise ApexError("--random-range-ratio applies to --kind uniform, not multiturn")
        tr = multiturn_trace(
            rate, num_requests, seed, burstiness, turns, think_time, hash_block_size
        )
        write_multiturn(out, tr)
        nconv = int(tr.conversation.max()) + 1
        typer.echo(
            f"wrote {out}: {num_requests} multiturn requests in {nconv} conversations over "
            f"{tr.arrival[-1]:.1f} s (rate {rate:g}/s, {turns:g} turns and {think_time:g} s "
            f"think time on average, seed {seed}); mean prompt {tr.prompt.mean():.1f}, "
            f"mean output {tr.output.mean():.1f} tokens"
        )
        return
    if random_range_ratio and name != "uniform":
        raise ApexError(f"--random-range-ratio applies to --kind uniform, not {name}")
    if name == "uniform" and random_range_ratio == 0.0:
        name = "fixed"
    t, p, out_len = generate(
        name, rate, num_requests, seed, burstiness, prompt_len, output_len, random_range_ratio
    )
    write_trace(out, t, p, out_len)
    typer.echo(
        f"wrote {out}: {num_requests} {name} requests over {t[-1]:.1f} s "
        f"(rate {rate:g}/s, burstiness {burstiness:g}, seed {seed}); mean prompt {p.mean():.1f}, "
        f"mean output {out_len.mean():.1f} tokens"
    )


def check_trace_args(rate: float, num_requests: int, out: Path) -> None:
    """What Typer's ranges do not say, checked before anything is generated or written."""
    from apex_fast.limits import (
        BYTES_PER_GENERATED_REQUEST,
        BYTES_PER_TRACE_LINE,
        check_disk_space,
        check_request_memory,
    )

    if not rate > 0:  # inf = every request at t = 0
        raise ApexError(f"--rate must be a positive number of requests/s (or inf), got {rate}")
    span = (num_requests - 1) / rate if math.isfinite(rate) else 0.0
    # gamma gaps: the span exceeds its mean by many standard deviations only with a tiny
    # probability; 2x the mean plus 10 gaps leaves room for bursty (burstiness < 1) traces
    if 2.0 * span + 10.0 / rate > TRACE_MAX_SPAN_S:
        raise ApexError(
            f"--rate {rate:g} with {num_requests} requests spans about {span:.3g} s, beyond the "
            f"{TRACE_MAX_SPAN_S:.3g} s (292 years) that nanosecond StartTimeOffset values can "
            "hold; raise --rate"
        )
    check_output_path(out, "--out")
    check_request_memory(num_requests, "--num-requests", BYTES_PER_GENERATED_REQUEST)
    parent = str(out.parent) if str(out.parent) else "."
    check_disk_space(float(num_requests) * BYTES_PER_TRACE_LINE, parent, "--out")
    if num_requests > MAX_TRACE_REQUESTS:
        raise ApexError(
            f"--num-requests {num_requests} is above the {MAX_TRACE_REQUESTS:,} requests a "
            "trace may hold (24 bytes each in memory while it is written)"
        )

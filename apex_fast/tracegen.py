"""`apex.py trace`: write a synthetic request trace (APEX+ JSON lines) with documented
statistics: Poisson or gamma arrivals and fixed, uniform, log-normal or fitted lengths
(apex_fast/workload/generators.py, sources there and in traces/README.md), or multi-turn chat
conversations whose turns share a growing prompt prefix, with its hash ids
(apex_fast/workload/multiturn.py).
"""

from __future__ import annotations

from pathlib import Path

import typer

from apex_fast.errors import ApexError
from apex_fast.workload.generators import generate
from apex_fast.workload.multiturn import (
    MULTITURN_HASH_BLOCK,
    MULTITURN_THINK_S,
    MULTITURN_TURNS,
    multiturn_trace,
)
from apex_fast.workload.writers import write_multiturn, write_trace

MAX_TRACE_REQUESTS = 100_000_000


def command(
    kind: str = typer.Option(
        ...,
        help="Lengths: lmsys (chat), creation, summarization (fitted), or fixed, uniform, "
        "lognormal around --prompt-len/--output-len; multiturn: chat conversations whose "
        "turns carry the earlier turns as a shared prefix (hash_ids written).",
    ),
    rate: float = typer.Option(
        ...,
        "--rate",
        "--request-rate",
        help="Mean arrival rate, requests per second (inf: all at 0).",
    ),
    num_requests: int = typer.Option(..., help="Number of requests."),
    seed: int = typer.Option(0, help="Random seed (same seed, same trace)."),
    burstiness: float = typer.Option(
        1.0, help="Gamma shape of the inter-arrival times: 1 = Poisson, < 1 = burstier."
    ),
    prompt_len: int = typer.Option(2048, help="Prompt tokens (mean) for fixed/uniform/lognormal."),
    output_len: int = typer.Option(128, help="Output tokens (mean) for fixed/uniform/lognormal."),
    random_range_ratio: float = typer.Option(
        0.0, help="uniform: lengths in [L(1-r), L(1+r)] as vLLM's random dataset, r in [0, 1)."
    ),
    turns: float = typer.Option(
        MULTITURN_TURNS,
        help="multiturn: mean turns per conversation (default: LMSYS-Chat-1M's 2.0).",
    ),
    think_time: float = typer.Option(
        MULTITURN_THINK_S,
        help="multiturn: mean seconds from one turn's arrival to the next (an assumption).",
    ),
    hash_block_size: int = typer.Option(
        MULTITURN_HASH_BLOCK, help="multiturn: prompt tokens per hash id written."
    ),
    out: Path = typer.Option(..., help="Output .jsonl path."),
) -> None:
    """Generate a synthetic trace with Poisson or gamma arrivals and fitted length distributions."""
    if num_requests > MAX_TRACE_REQUESTS:
        raise ApexError(
            f"--num-requests {num_requests} is above the {MAX_TRACE_REQUESTS:,} requests a "
            "trace may hold (24 bytes each in memory while it is written)"
        )
    multi_only = {
        "--turns": turns != MULTITURN_TURNS,
        "--think-time": think_time != MULTITURN_THINK_S,
        "--hash-block-size": hash_block_size != MULTITURN_HASH_BLOCK,
    }
    given = [k for k, v in multi_only.items() if v]
    if given and kind != "multiturn":
        raise ApexError(f"{given[0]} applies to --kind multiturn, not {kind}")
    if kind == "multiturn":
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
    if random_range_ratio and kind != "uniform":
        raise ApexError(f"--random-range-ratio applies to --kind uniform, not {kind}")
    if kind == "uniform" and random_range_ratio == 0.0:
        kind = "fixed"
    t, p, o = generate(
        kind, rate, num_requests, seed, burstiness, prompt_len, output_len, random_range_ratio
    )
    write_trace(out, t, p, o)
    typer.echo(
        f"wrote {out}: {num_requests} {kind} requests over {t[-1]:.1f} s "
        f"(rate {rate:g}/s, burstiness {burstiness:g}, seed {seed}); mean prompt {p.mean():.1f}, "
        f"mean output {o.mean():.1f} tokens"
    )

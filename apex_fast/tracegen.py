"""`apex.py trace`: synthetic request traces (APEX+ JSON lines) with documented statistics.

Arrivals: Poisson at `--rate` (exponential gaps), or gamma gaps with shape `--burstiness` and
mean 1/rate (burstiness < 1 = burstier than Poisson, > 1 = more regular); this is the
parameterisation of vLLM's `benchmarks/benchmark_serving.py --burstiness`, and gamma-shaped
inter-arrival times are what BurstGPT (Wang et al., arXiv 2401.17644) fitted to real LLM
service traffic.

Lengths: bivariate log-normal (log prompt, log output, with correlation rho), clipped to the
observed range. Parameters were fitted to the reference traces in ../shared/reference/traces/llama
(Llama-3 tokenizer; statistics derived there, files not copied) and cross-checked against
published figures: LMSYS-Chat-1M (Zheng et al., arXiv 2309.11998, Table 1) reports 69.5 prompt
and 214.5 response tokens per turn on average; the reference lmsys trace has 61.7 and 162.1.
See traces/README.md for the full table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import typer

from apex_fast.errors import ApexError


@dataclass(frozen=True)
class LengthModel:
    """log(prompt) ~ N(mu_p, sd_p), log(output) ~ N(mu_o, sd_o), corr rho; clipped to ranges."""

    mu_p: float
    sd_p: float
    mu_o: float
    sd_o: float
    rho: float
    prompt_range: tuple[int, int]
    output_range: tuple[int, int]
    source: str

    def mean_prompt(self) -> float:
        return math.exp(self.mu_p + self.sd_p**2 / 2)  # before clipping

    def mean_output(self) -> float:
        return math.exp(self.mu_o + self.sd_o**2 / 2)


_REF = "fitted to ../shared/reference/traces/llama/{}_05.jsonl ({} requests)"

# Fitted: mean and std of log lengths, Pearson correlation of the logs, min/max of the reference.
KINDS: dict[str, LengthModel] = {
    # reference: prompt mean 61.7 / median 17 / p95 308; output mean 162.1 / median 117 / p95 436
    "lmsys": LengthModel(3.098, 1.329, 4.471, 1.345, 0.108, (2, 1037), (1, 761), _REF.format("lmsys", 1024)),
    # reference: prompt mean 307.7 / median 309; output mean 1144.3 / median 1106 / p95 1807
    "creation": LengthModel(5.688, 0.289, 6.965, 0.406, 0.727, (100, 1232), (236, 3501), _REF.format("creation", 512)),
    # reference: prompt mean 2753.1 / median 2943 / p95 4001 (documents cut at 4096 tokens);
    # output mean 170.5 / median 162
    "summarization": LengthModel(7.838, 0.448, 5.052, 0.425, 0.075, (245, 4092), (51, 458), _REF.format("summarization", 1302)),
}  # fmt: skip


def arrivals(n: int, rate: float, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    """n arrival times in seconds, the first at 0: gamma gaps, shape = burstiness, mean 1/rate
    (burstiness 1 = Poisson)."""
    if rate <= 0 or not math.isfinite(rate):
        raise ApexError(f"--rate must be a positive number of requests/s, got {rate}")
    if burstiness <= 0 or not math.isfinite(burstiness):
        raise ApexError(f"--burstiness must be > 0 (1 = Poisson), got {burstiness}")
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=max(n - 1, 0))
    return np.concatenate([[0.0], np.cumsum(gaps)])


def lengths(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind not in KINDS:
        raise ApexError(f"unknown --kind {kind!r}: use one of {', '.join(KINDS)}")
    k = KINDS[kind]
    z1 = rng.standard_normal(n)
    z2 = k.rho * z1 + math.sqrt(1.0 - k.rho**2) * rng.standard_normal(n)
    p = np.rint(np.exp(k.mu_p + k.sd_p * z1)).astype(np.int64)
    o = np.rint(np.exp(k.mu_o + k.sd_o * z2)).astype(np.int64)
    return np.clip(p, *k.prompt_range), np.clip(o, *k.output_range)


def generate(
    kind: str, rate: float, num_requests: int, seed: int = 0, burstiness: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival seconds, prompt tokens, output tokens) of a synthetic trace."""
    if num_requests < 1:
        raise ApexError(f"--num-requests must be at least 1, got {num_requests}")
    rng = np.random.default_rng(seed)
    t = arrivals(num_requests, rate, burstiness, rng)
    p, o = lengths(kind, num_requests, rng)
    return t, p, o


def write_trace(path: str | Path, t: np.ndarray, p: np.ndarray, o: np.ndarray) -> None:
    """APEX+ JSON lines: StartTimeOffset (ns), ContextTokens, GeneratedTokens, RequestID."""
    lines = [
        orjson.dumps(
            {
                "StartTimeOffset": int(round(ti * 1e9)),
                "ContextTokens": int(pi),
                "GeneratedTokens": int(oi),
                "RequestID": f"synthetic-{i:06d}",
            }
        )
        for i, (ti, pi, oi) in enumerate(zip(t, p, o, strict=True))
    ]
    try:
        Path(path).write_bytes(b"\n".join(lines) + b"\n")
    except OSError as err:
        raise ApexError(f"cannot write trace {path}: {err.strerror}") from None


def command(
    kind: str = typer.Option(..., help="Workload: lmsys (chat), creation, summarization."),
    rate: float = typer.Option(..., help="Mean arrival rate, requests per second."),
    num_requests: int = typer.Option(..., help="Number of requests."),
    seed: int = typer.Option(0, help="Random seed (same seed, same trace)."),
    burstiness: float = typer.Option(
        1.0, help="Gamma shape of the inter-arrival times: 1 = Poisson, < 1 = burstier."
    ),
    out: Path = typer.Option(..., help="Output .jsonl path."),
) -> None:
    """Generate a synthetic trace with Poisson or gamma arrivals and fitted length distributions."""
    t, p, o = generate(kind, rate, num_requests, seed, burstiness)
    write_trace(out, t, p, o)
    typer.echo(
        f"wrote {out}: {num_requests} {kind} requests over {t[-1]:.1f} s "
        f"(rate {rate:g}/s, burstiness {burstiness:g}, seed {seed}); mean prompt {p.mean():.1f}, "
        f"mean output {o.mean():.1f} tokens"
    )

"""Synthetic request traces with documented statistics: arrival times and token lengths.

Arrivals: Poisson at `--rate` (exponential gaps), or gamma gaps with shape `--burstiness` and
mean 1/rate (burstiness < 1 = burstier than Poisson, > 1 = more regular); this is the
parameterisation of vLLM's `benchmarks/benchmark_serving.py --burstiness`, and gamma-shaped
inter-arrival times are what BurstGPT (Wang et al., arXiv 2401.17644) fitted to real LLM
service traffic.

Lengths (`--kind`): `fixed` (`--prompt-len`/`--output-len` exactly), `uniform` (vLLM's random
dataset: integers uniform in [floor(L(1-r)), ceil(L(1+r))] with r = `--random-range-ratio`),
`lognormal` (mean L, spread of the lmsys fit below), or a fitted workload: bivariate log-normal
(log prompt, log output, with correlation rho), clipped to the observed range. Parameters were fitted to the reference traces in ../shared/reference/traces/llama
(Llama-3 tokenizer; statistics derived there, files not copied) and cross-checked against
published figures: LMSYS-Chat-1M (Zheng et al., arXiv 2309.11998, Table 1) reports 69.5 prompt
and 214.5 response tokens per turn on average; the reference lmsys trace has 61.7 and 162.1.
See traces/README.md for the full table.

"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.workload.columns import MAX_TOKENS


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


MAX_SPAN_S = 1e9  # s (about 32 years): longest plausible span of arrival times


def arrivals(n: int, rate: float, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    """n arrival times in seconds, the first at 0: gamma gaps, shape = burstiness, mean 1/rate
    (burstiness 1 = Poisson; rate inf = all at 0, as vLLM bench's default)."""
    if not rate > 0:
        raise ApexError(f"--rate must be a positive number of requests/s, got {rate}")
    if math.isinf(rate):
        return np.zeros(n, np.float64)
    if burstiness <= 0 or not math.isfinite(burstiness):
        raise ApexError(f"--burstiness must be > 0 (1 = Poisson), got {burstiness}")
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=max(n - 1, 0))
    t = np.concatenate([[0.0], np.cumsum(gaps)])
    if not (math.isfinite(t[-1]) and t[-1] <= MAX_SPAN_S):
        raise ApexError(
            f"{n} requests at {rate:g} req/s (burstiness {burstiness:g}) arrive over more than "
            f"{MAX_SPAN_S:.0e} s; not a plausible workload"
        )
    return t


def lengths(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind not in KINDS:
        raise ApexError(f"unknown --kind {kind!r}: use one of {', '.join(KINDS)}")
    k = KINDS[kind]
    z1 = rng.standard_normal(n)
    z2 = k.rho * z1 + math.sqrt(1.0 - k.rho**2) * rng.standard_normal(n)
    p = np.rint(np.exp(k.mu_p + k.sd_p * z1)).astype(np.int64)
    o = np.rint(np.exp(k.mu_o + k.sd_o * z2)).astype(np.int64)
    return np.clip(p, *k.prompt_range), np.clip(o, *k.output_range)


# Spread of the `lognormal` length distribution: the log-sd (and log correlation) of the lmsys
# fit above (short chats; the reference trace's means are within 25% of LMSYS-Chat-1M's
# published per-turn means), with the mean set to --prompt-len / --output-len.
LOGNORMAL_SHAPE = KINDS["lmsys"]
LENGTH_DISTS = ("fixed", "uniform", "lognormal", *KINDS)


def uniform_bounds(length: int, ratio: float) -> tuple[int, int]:
    """vLLM's random dataset (`vllm/benchmarks/datasets.py`, RandomDataset.sample, main branch
    late 2025): lengths uniform over the integers [floor(L(1-r)), ceil(L(1+r))], r in [0, 1);
    the lower bound is raised to 1 (vLLM does so for outputs; a prompt needs a token too).
    Same floating-point expressions as vLLM, so e.g. L = 100, r = 0.1 gives [90, 111]."""
    lo = max(math.floor(length * (1.0 - ratio)), 1)
    hi = max(math.ceil(length * (1.0 + ratio)), lo)
    return lo, hi


def synthetic_lengths(
    dist: str,
    n: int,
    prompt_len: int,
    output_len: int,
    range_ratio: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(prompt tokens, output tokens, a short description) of n synthetic requests."""
    if dist not in LENGTH_DISTS:
        raise ApexError(
            f"unknown length distribution {dist!r}: use one of {', '.join(LENGTH_DISTS)}"
        )
    if dist in KINDS:
        p, o = lengths(dist, n, rng)
        return p, o, f"{dist} lengths ({n} requests)"
    if prompt_len > MAX_TOKENS or output_len > MAX_TOKENS:
        raise ApexError(f"lengths above {MAX_TOKENS} tokens are not plausible")
    if dist == "fixed":
        p = np.full(n, prompt_len, np.int64)
        o = np.full(n, output_len, np.int64)
        return p, o, f"fixed lengths {n} x ({prompt_len} in, {output_len} out)"
    if dist == "uniform":
        plo, phi = uniform_bounds(prompt_len, range_ratio)
        olo, ohi = uniform_bounds(output_len, range_ratio)
        p = rng.integers(plo, phi + 1, size=n, dtype=np.int64)
        o = rng.integers(olo, ohi + 1, size=n, dtype=np.int64)
        return p, o, f"uniform lengths {n} x ({plo}-{phi} in, {olo}-{ohi} out)"
    k = LOGNORMAL_SHAPE
    z1 = rng.standard_normal(n)
    z2 = k.rho * z1 + math.sqrt(1.0 - k.rho**2) * rng.standard_normal(n)
    mu_p = math.log(prompt_len) - k.sd_p**2 / 2.0
    mu_o = math.log(output_len) - k.sd_o**2 / 2.0
    p = np.clip(np.rint(np.exp(mu_p + k.sd_p * z1)), 1, MAX_TOKENS).astype(np.int64)
    o = np.clip(np.rint(np.exp(mu_o + k.sd_o * z2)), 1, MAX_TOKENS).astype(np.int64)
    return p, o, f"log-normal lengths {n} x (mean {prompt_len} in, {output_len} out)"


def generate(
    kind: str,
    rate: float,
    num_requests: int,
    seed: int = 0,
    burstiness: float = 1.0,
    prompt_len: int = 2048,
    output_len: int = 128,
    range_ratio: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival seconds, prompt tokens, output tokens) of a synthetic trace. For the fitted
    kinds the random stream is the same as before the other distributions existed."""
    if num_requests < 1:
        raise ApexError(f"--num-requests must be at least 1, got {num_requests}")
    if seed < 0:
        raise ApexError(f"--seed must be >= 0, got {seed}")
    if not (0.0 <= range_ratio < 1.0):
        raise ApexError(f"--random-range-ratio must be in [0, 1), got {range_ratio}")
    if kind not in LENGTH_DISTS:
        raise ApexError(f"unknown --kind {kind!r}: use one of {', '.join(LENGTH_DISTS)}")
    if prompt_len < 1 or output_len < 1:
        raise ApexError("--prompt-len and --output-len must be at least 1")
    rng = np.random.default_rng(seed)
    t = arrivals(num_requests, rate, burstiness, rng)
    p, o, _ = synthetic_lengths(kind, num_requests, prompt_len, output_len, range_ratio, rng)
    return t, p, o

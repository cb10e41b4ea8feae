"""`apex.py trace`: synthetic request traces (APEX+ JSON lines) with documented statistics.

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

Multi-turn chat (`--kind multiturn`, `multiturn_trace`): conversations whose every turn sends the
whole conversation so far (earlier messages and answers) plus a new message, so consecutive turns
share a growing prompt prefix; each line carries Mooncake-style `hash_ids` (one id per
`--hash-block-size` tokens of the prompt) that the prefix cache uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
MAX_LENGTH = 100_000_000  # tokens; the trace reader's plausibility bound
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
    if prompt_len > MAX_LENGTH or output_len > MAX_LENGTH:
        raise ApexError(f"lengths above {MAX_LENGTH} tokens are not plausible")
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
    p = np.clip(np.rint(np.exp(mu_p + k.sd_p * z1)), 1, MAX_LENGTH).astype(np.int64)
    o = np.clip(np.rint(np.exp(mu_o + k.sd_o * z2)), 1, MAX_LENGTH).astype(np.int64)
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


# --- multi-turn conversations
# Mean turns per conversation: LMSYS-Chat-1M (Zheng et al., arXiv 2309.11998, Table 1) reports
# 2.0 turns per conversation on average; turns = 1 + geometric, mean MULTITURN_TURNS.
MULTITURN_TURNS = 2.0
# Mean time (s) from one turn's arrival to the next turn of the same conversation (the answer
# plus the user's reading and typing). An assumption, not a measurement: no public figure for
# chat think time is used; exponential, set with --think-time.
MULTITURN_THINK_S = 60.0
# Tokens per hash id in the written trace: vLLM's default KV block size (16), so the cache sees
# the shared prefix to the block; Mooncake's own traces use 512.
MULTITURN_HASH_BLOCK = 16


@dataclass(frozen=True)
class MultiTurnTrace:
    arrival: np.ndarray  # s, sorted
    prompt: np.ndarray  # tokens: the conversation so far plus the new message
    output: np.ndarray  # tokens of the answer
    hash_ids: np.ndarray  # flat; request i: hash_ids[hash_offsets[i]:hash_offsets[i+1]]
    hash_offsets: np.ndarray
    conversation: np.ndarray  # conversation number of each request
    hash_block: int


def multiturn_trace(
    rate: float,
    num_requests: int,
    seed: int = 0,
    burstiness: float = 1.0,
    turns: float = MULTITURN_TURNS,
    think_time: float = MULTITURN_THINK_S,
    hash_block: int = MULTITURN_HASH_BLOCK,
) -> MultiTurnTrace:
    """Multi-turn chat: conversations start with gamma gaps (shape `burstiness`) at
    rate / turns per second, so requests arrive at about `rate` per second; a conversation has
    1 + Geometric turns (mean `turns`); turn k + 1 arrives an exponential `think_time` (mean)
    after turn k. Every turn's new message and answer lengths are drawn from the lmsys fit (one
    chat turn); turn k's prompt is all earlier messages and answers plus its message.

    Hash ids: a conversation's token stream (message 1, answer 1, message 2, ...) is cut into
    blocks of `hash_block` tokens; full block b of conversation c has one id shared by all
    its turns, a prompt's partial last block an id of its own (its content differs from the
    full block later turns see)."""
    if num_requests < 1:
        raise ApexError(f"--num-requests must be at least 1, got {num_requests}")
    if seed < 0:
        raise ApexError(f"--seed must be >= 0, got {seed}")
    if not (turns >= 1.0 and math.isfinite(turns)):
        raise ApexError(f"--turns must be a mean number of turns >= 1, got {turns}")
    if not (think_time >= 0.0 and math.isfinite(think_time)):
        raise ApexError(f"--think-time must be >= 0 seconds, got {think_time}")
    if not (1 <= hash_block <= 1 << 20):
        raise ApexError(f"--hash-block-size must be in [1, 1048576] tokens, got {hash_block}")
    rng = np.random.default_rng(seed)
    # conversations until the turns cover num_requests (the last one cut short)
    nturn = rng.geometric(1.0 / turns, num_requests)
    ends = np.cumsum(nturn)
    nconv = int(np.searchsorted(ends, num_requests)) + 1
    nturn = nturn[:nconv]
    nturn[-1] -= int(ends[nconv - 1]) - num_requests
    starts = arrivals(nconv, rate / turns, burstiness, rng)
    conv = np.repeat(np.arange(nconv), nturn)
    first = np.concatenate([[0], np.cumsum(nturn)[:-1]])
    k = np.arange(num_requests) - first[conv]  # turn number in its conversation
    gaps = rng.exponential(think_time, num_requests) if think_time > 0 else np.zeros(num_requests)
    gaps[k == 0] = 0.0
    t = starts[conv] + _segment_cumsum(gaps, first, nturn)
    msg, ans = lengths("lmsys", num_requests, rng)
    # conversation so far before turn k: all earlier messages and answers
    history = _segment_cumsum(msg + ans, first, nturn) - (msg + ans)
    prompt = history + msg
    # hash ids: full blocks of the conversation stream, then the partial last block
    full = prompt // hash_block
    part = (prompt % hash_block > 0).astype(np.int64)
    most = np.zeros(nconv, np.int64)
    np.maximum.at(most, conv, full)
    base = np.concatenate([[0], np.cumsum(most)[:-1]])  # first id of each conversation
    lens = full + part
    off = np.zeros(num_requests + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    j = np.arange(off[-1], dtype=np.int64) - np.repeat(off[:-1], lens)
    ids = np.repeat(base[conv], lens) + j
    tail = off[1:][part == 1] - 1  # partial last blocks: fresh ids after all full ones
    ids[tail] = int(most.sum()) + np.arange(tail.size)
    order = np.argsort(t, kind="stable")
    new_lens = lens[order]
    new_off = np.zeros(num_requests + 1, np.int64)
    np.cumsum(new_lens, out=new_off[1:])
    src = np.repeat(off[:-1][order] - new_off[:-1], new_lens) + np.arange(new_off[-1])
    return MultiTurnTrace(
        t[order] - t[order][0],
        prompt[order],
        ans[order],
        ids[src],
        new_off,
        conv[order],
        hash_block,
    )


def _segment_cumsum(x: np.ndarray, first: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Cumulative sums of x restarting at every segment (first index, length)."""
    c = np.cumsum(x)
    before = np.concatenate([[0], c])[first]
    return c - np.repeat(before, count)


def write_multiturn(path: str | Path, tr: MultiTurnTrace) -> None:
    """APEX+ JSON lines plus `hash_ids`, `hash_block_size` and `ConversationID`."""
    try:
        with Path(path).open("wb") as f:
            ns = np.rint(tr.arrival * 1e9).astype(np.int64).tolist()
            ids = tr.hash_ids.tolist()
            off = tr.hash_offsets.tolist()
            for a in range(0, len(ns), _WRITE_BLOCK):
                lines = []
                for i in range(a, min(a + _WRITE_BLOCK, len(ns))):
                    h = ",".join(map(str, ids[off[i] : off[i + 1]]))
                    lines.append(
                        b'{"StartTimeOffset":%d,"ContextTokens":%d,"GeneratedTokens":%d,'
                        b'"RequestID":"multiturn-%06d","ConversationID":%d,'
                        b'"hash_block_size":%d,"hash_ids":[%s]}\n'
                        % (
                            ns[i],
                            int(tr.prompt[i]),
                            int(tr.output[i]),
                            i,
                            int(tr.conversation[i]),
                            tr.hash_block,
                            h.encode(),
                        )
                    )
                f.write(b"".join(lines))
    except OSError as err:
        raise ApexError(f"cannot write trace {path}: {err.strerror or err}") from None


MAX_TRACE_REQUESTS = 100_000_000
_WRITE_BLOCK = 16384  # lines formatted and written at a time (about 6 MB of Python objects)


def write_trace(path: str | Path, t: np.ndarray, p: np.ndarray, o: np.ndarray) -> None:
    """APEX+ JSON lines: StartTimeOffset (ns), ContextTokens, GeneratedTokens, RequestID.
    Streamed in blocks, so memory stays at the three columns plus one block of text."""
    n = t.size
    if p.size != n or o.size != n:
        raise ApexError("trace columns differ in length")
    try:
        with Path(path).open("wb") as f:
            for a in range(0, n, _WRITE_BLOCK):
                b = min(a + _WRITE_BLOCK, n)
                ns = np.rint(t[a:b] * 1e9).astype(np.int64).tolist()
                lines = [
                    b'{"StartTimeOffset":%d,"ContextTokens":%d,"GeneratedTokens":%d,'
                    b'"RequestID":"synthetic-%06d"}\n' % (ti, pi, oi, a + i)
                    for i, (ti, pi, oi) in enumerate(
                        zip(ns, p[a:b].tolist(), o[a:b].tolist(), strict=True)
                    )
                ]
                f.write(b"".join(lines))
    except OSError as err:
        raise ApexError(f"cannot write trace {path}: {err.strerror or err}") from None

"""One scheduler stream (a DP replica or one pipeline virtual engine): typed inputs and outputs
around the Numba batching kernel. Semantics: docs/scheduler.md."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.kernels import params as kp
from apex_fast.sim import records as rec

__all__ = [
    "SchedulerConfig",
    "StepCosts",
    "StreamResult",
    "run_stream",
    "gap_bin_edges",
]


# The Numba kernel (and Numba itself) is imported when a stream is first simulated, not when
# this module is: command lines that stop before simulating (bad input, listings) skip it.
def __getattr__(name: str) -> object:  # GAP_BINS, simulate_stream
    if name == "GAP_BINS":
        from apex_fast.kernels.gaps import GAP_BINS

        return GAP_BINS
    if name == "simulate_stream":
        from apex_fast.kernels.batching import simulate_stream

        return simulate_stream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# records allocated up front at most (5.5 MiB for the float and int columns). A larger first
# reservation is not free although untouched rows cost no memory: the kernel's first writes
# fault in (and zero) transparent huge pages, 0.5 ms per call at 1 << 20 rows, a sixth of a
# saturated-decode stream of 4000 requests (bench/kernel.py). A stream that outgrows it re-runs
# once with room for its bound up to RECORDS_RETRY, then with 4x the room each time.
RECORDS_RESERVED = 1 << 16
RECORDS_RETRY = 1 << 20


def gap_bin_edges() -> np.ndarray:
    """Edges of the inter-token-gap histogram bins (kernels/gaps.py)."""
    from apex_fast.kernels.gaps import gap_bin_edges as edges

    return edges()


@dataclass(frozen=True)
class SchedulerConfig:
    """vLLM scheduler limits for one stream."""

    num_blocks: int  # KV blocks of the stream, all attention copies together
    block_size: int = 16
    watermark: int = 0
    max_num_seqs: int = 256
    budget: int = 2048
    chunked: bool = True
    # vLLM >= 0.6 async output processing: a step's outputs are delivered when the next step
    # ends (if one follows at once), so first-token and finish times shift by one step
    output_lag: bool = False
    # sliding-window attention: the blocks the last `window` tokens can straddle (0: no window)
    # and the share of the KV bytes in full-attention layers (kernels/batching.py _kv_blocks)
    window_blocks: int = 0
    full_kv_fraction: float = 1.0
    # KV admission policy (kernels/params.py ADMIT_*): 0 whole prompt (vLLM V0), 1 prompt +
    # max output reserved, never preempt (TensorRT-LLM GUARANTEED_NO_EVICT), 2 blocks per
    # scheduled chunk (vLLM V1); docs/scheduler.md "Admission policies"
    admission: int = 0
    # attention copies of the stage (docs/memory.md "KV cache per attention copy"): each copy
    # has a pool of num_blocks / copies blocks and keeps `watermark` of them free at admission;
    # a request takes all its blocks from the one copy that serves it
    copies: int = 1
    # admission 3 (SGLang, prefill-only steps: chunked False): prefill tokens per step, a longer
    # prompt split over consecutive steps (SGLang chunked_prefill_size; 0: never split)
    prefill_chunk: int = 0
    # speed only, the results are identical: from this many running sequences the kernel
    # advances decoding sequences as one lazy set (docs/scheduler.md "Lazy decode set"; 0: never)
    lazy_min_running: int = 32
    # vLLM V0 multi-step scheduling (--num-scheduler-steps): decode steps per scheduler call,
    # with prefill-only steps and the whole-prompt admission only (docs/scheduler.md rule 9)
    num_scheduler_steps: int = 1


@dataclass(frozen=True)
class StepCosts:
    """Step duration = host + max(gpu, launch floor), the floor being 0 for a decode-only batch
    that replays a CUDA graph, piecewise_floor for a step of <= piecewise_tokens tokens and
    eager_floor otherwise, with
    host = overhead + host_seq * n_scheduled and
    gpu = tok_table[n_tok] + seq_table[n_samp] + c_attn*work + c_ctx*ctx (sim/step_time.py)."""

    tok_table: np.ndarray
    seq_table: np.ndarray
    c_attn: float
    c_ctx: float
    overhead: float
    # CPU launch time of an eager forward pass: a step holding prefill tokens runs eagerly
    eager_floor: float = 0.0
    # CPU seconds per scheduled sequence per step
    host_seq: float = 0.0
    # decode-only batches of at most this many sequences replay a CUDA graph (no launch
    # floor); 0 = never (eager mode)
    graph_max_seqs: int = 1 << 62
    # steps of at most this many tokens replay piecewise graphs (attention launched eagerly)
    # and last at least host + piecewise_floor (vLLM V1); 0 = none
    piecewise_tokens: int = 0
    piecewise_floor: float = 0.0


@dataclass
class StreamResult:
    """Per-request times and per-record step data (one record = `count` identical-shape steps)."""

    first_token: np.ndarray
    finish: np.ndarray
    preemptions: np.ndarray
    rec_start: np.ndarray
    rec_count: np.ndarray
    rec_d0: np.ndarray
    rec_dd: np.ndarray
    rec_pf_tok: np.ndarray
    rec_dec: np.ndarray
    rec_samp: np.ndarray
    rec_ctx0: np.ndarray
    rec_work: np.ndarray
    rec_blocks: np.ndarray
    rec_sched: np.ndarray
    gap_hist: np.ndarray
    # time each request entered the system: its arrival, or later under a concurrency limit
    arrival: np.ndarray | None = None
    # prompt tokens found in the prefix cache at each request's first admission (0 when off)
    cached: np.ndarray | None = None
    # huge streams: the sums of apex_fast.metrics.records replace the record arrays (emptied)
    rec_sums: dict[str, float] | None = None
    rec_steps: int | None = None

    def __getstate__(self) -> dict:
        # the gap histogram is mostly zeros: ship it sparse between processes
        state = dict(self.__dict__)
        nz = np.flatnonzero(self.gap_hist)
        state["gap_hist"] = (self.gap_hist.size, nz, self.gap_hist[nz])
        return state

    def __setstate__(self, state: dict) -> None:
        size, nz, vals = state["gap_hist"]
        hist = np.zeros(size, np.int64)
        hist[nz] = vals
        state["gap_hist"] = hist
        self.__dict__.update(state)

    @property
    def num_steps(self) -> int:
        return self.rec_steps if self.rec_steps is not None else int(self.rec_count.sum())

    def steps(self) -> dict[str, np.ndarray]:
        """Expand records into one row per step (for tests and small traces)."""
        cnt = self.rec_count
        idx = np.repeat(np.arange(cnt.size), cnt)
        first = np.cumsum(cnt) - cnt
        j = np.arange(idx.size) - first[idx]
        d0 = self.rec_d0[idx]
        dd = self.rec_dd[idx]
        dec = self.rec_dec[idx]
        dur = rec.step_duration(d0, dd, j)
        start = rec.step_start(self.rec_start[idx], d0, dd, j)
        return {
            "start": start,
            "duration": dur,
            "n_prefill_tokens": self.rec_pf_tok[idx],
            "n_decode": dec,
            "n_samp": self.rec_samp[idx],
            "ctx": rec.step_ctx(self.rec_ctx0[idx], dec, j),
            "work": self.rec_work[idx],
            "n_sched": self.rec_sched[idx],
        }


def run_stream(
    arrival: np.ndarray,
    prompt: np.ndarray,
    output: np.ndarray,
    cfg: SchedulerConfig,
    costs: StepCosts,
    prefix: np.ndarray | None = None,
    max_concurrency: int = 0,
    block_keys: tuple[np.ndarray, np.ndarray] | None = None,
    copy: np.ndarray | None = None,
) -> StreamResult:
    """Simulate one stream. Arrays must be sorted by arrival; prompt and output >= 1.

    `prefix` (optional, per request): KV tokens present at admission that need no compute and
    that every token attends to, e.g. the cross-attention KV of an encoder-decoder model.
    `max_concurrency` > 0: closed loop, at most that many requests in the system at once; a
    request enters when a slot frees (first come, first served); entry times in `arrival`.
    `block_keys` (optional): prefix caching on, (keys, offsets): request i's first
    offsets[i+1] - offsets[i] prompt blocks (of cfg.block_size tokens) have the int64 keys
    keys[offsets[i]:offsets[i+1]]; equal keys mean equal prompt prefixes up to the end of that
    block (docs/scheduler.md, "Prefix cache"). None or no keys: no prefix cache.
    `copy` (optional, per request, 0..cfg.copies-1): the attention copy serving each request
    (docs/memory.md, "KV cache per attention copy"); None: all on copy 0.
    """
    arrival = np.ascontiguousarray(arrival, dtype=np.float64)
    prompt = np.ascontiguousarray(prompt, dtype=np.int64)
    output = np.ascontiguousarray(output, dtype=np.int64)
    n = arrival.size
    prefix = (
        np.zeros(n, np.int64) if prefix is None else np.ascontiguousarray(prefix, dtype=np.int64)
    )
    if max_concurrency < 0:
        raise ApexError(f"max_concurrency must be >= 0, got {max_concurrency}")
    if not (prompt.size == n and output.size == n and prefix.size == n):
        raise ApexError("arrival, prompt and output must have the same length")
    if cfg.budget + 1 > costs.tok_table.size or cfg.max_num_seqs + 1 > costs.seq_table.size:
        raise ApexError("step cost tables are shorter than the scheduler limits")
    from apex_fast.kernels.gaps import GAP_BINS
    from apex_fast.sim.kernel_load import batching_kernel

    simulate_stream = batching_kernel()
    pc_key, pc_off, nkeys = _dense_keys(block_keys, prompt, cfg.block_size)
    copy = _copy_tags(copy, n, cfg, nkeys)
    pf, pi = kernel_params(cfg, costs, int(min(max_concurrency, n)), nkeys)
    tok_table = np.ascontiguousarray(costs.tok_table, dtype=np.float64)
    seq_table = np.ascontiguousarray(costs.seq_table, dtype=np.float64)
    chunk = cfg.budget if cfg.chunked else max(cfg.budget, 1)
    # prefill chunks at most: sum of ceil(prompt / chunk) <= n + sum(prompt) // chunk (a bound
    # without a division per request, which cost 25 us per 4000 requests)
    chunks = n + int(prompt.sum()) // chunk
    cap = 4 * n + chunks + 1024
    # a record is at least one step and, without preemption, a step prefills a chunk or decodes
    # a token of some request: room for that many records up to RECORDS_RESERVED avoids most
    # re-runs of a stream that overflows the first guess (rows never written cost no memory)
    bound = chunks + int(output.sum())
    cap = max(cap, min(bound, RECORDS_RESERVED))
    while True:
        first = np.empty(n, np.float64)
        finish = np.empty(n, np.float64)
        pre = np.zeros(n, np.int64)
        # field by field: each field of the records is one contiguous row (copied out at once)
        rf = np.empty((rec.N_F, cap), np.float64)
        ri = np.empty((rec.N_I, cap), np.int64)
        hist = np.zeros(GAP_BINS, np.int64)
        entry = np.empty(n, np.float64)
        cached = np.empty(n, np.int64)
        nrec = simulate_stream(
            arrival, prompt, output, prefix, tok_table, seq_table, pf, pi, pc_key, pc_off, copy,
            first, finish, pre, entry, cached, rf, ri, hist,
        )  # fmt: skip
        if nrec >= 0:
            break
        cap = max(cap * 4, min(bound, RECORDS_RETRY))
    return StreamResult(
        first_token=first,
        finish=finish,
        preemptions=pre,
        rec_start=rf[rec.F_START, :nrec].copy(),
        rec_d0=rf[rec.F_D0, :nrec].copy(),
        rec_dd=rf[rec.F_DD, :nrec].copy(),
        rec_work=rf[rec.F_WORK, :nrec].copy(),
        rec_count=ri[rec.I_COUNT, :nrec].copy(),
        rec_pf_tok=ri[rec.I_PF_TOK, :nrec].copy(),
        rec_dec=ri[rec.I_DEC, :nrec].copy(),
        rec_samp=ri[rec.I_SAMP, :nrec].copy(),
        rec_ctx0=ri[rec.I_CTX0, :nrec].copy(),
        rec_blocks=ri[rec.I_BLOCKS, :nrec].copy(),
        rec_sched=ri[rec.I_SCHED, :nrec].copy(),
        gap_hist=hist,
        arrival=entry,
        cached=cached,
    )


# (cfg, costs, max_conc, pc_nkeys, pf, pi) of the last kernel_params call
_PARAMS_MEMO: list[tuple | None] = [None]


def kernel_params(
    cfg: SchedulerConfig, costs: StepCosts, max_conc: int, pc_nkeys: int
) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's scalar parameters packed into (float64 array, int64 array), slots as in
    kernels/params.py. The streams of a plan share `cfg` and `costs`: the arrays of the last
    call are reused when the same objects come again (the kernel only reads them)."""
    memo = _PARAMS_MEMO[0]
    if (
        memo is not None
        and memo[0] is cfg
        and memo[1] is costs
        and memo[2] == max_conc
        and memo[3] == pc_nkeys
    ):
        return memo[4], memo[5]
    floats = {
        kp.PF_C_ATTN: costs.c_attn, kp.PF_C_CTX: costs.c_ctx, kp.PF_OVERHEAD: costs.overhead,
        kp.PF_HOST_SEQ: costs.host_seq, kp.PF_EAGER_FLOOR: costs.eager_floor,
        kp.PF_PIECEWISE_FLOOR: costs.piecewise_floor, kp.PF_FULL_FRAC: cfg.full_kv_fraction,
        # starting state of SGLang's admission (kernels/token_ratio.py)
        kp.PF_RATIO0: kp.INIT_NEW_TOKEN_RATIO, kp.PF_RATIO_STEPS: 0.0, kp.PF_BLOCKED: np.inf,
    }  # fmt: skip
    ints = {
        kp.PI_NUM_BLOCKS: cfg.num_blocks, kp.PI_BLOCK_SIZE: cfg.block_size,
        kp.PI_WATERMARK: cfg.watermark, kp.PI_MAX_NUM_SEQS: cfg.max_num_seqs,
        kp.PI_BUDGET: cfg.budget, kp.PI_CHUNKED: bool(cfg.chunked),
        kp.PI_OUTPUT_LAG: bool(cfg.output_lag), kp.PI_MAX_CONC: max_conc,
        kp.PI_PC_NKEYS: pc_nkeys, kp.PI_WIN_BLOCKS: cfg.window_blocks,
        kp.PI_GRAPH_MAX_SEQS: costs.graph_max_seqs, kp.PI_PIECEWISE_TOKENS: costs.piecewise_tokens,
        kp.PI_ADMISSION: cfg.admission,
        kp.PI_COPIES: cfg.copies, kp.PI_PREFILL_CHUNK: cfg.prefill_chunk,
        kp.PI_LAZY_MIN: cfg.lazy_min_running, kp.PI_SCHED_STEPS: cfg.num_scheduler_steps,
    }  # fmt: skip
    # every slot filled (a KeyError here is a slot without a value)
    pf = np.array([float(floats[k]) for k in range(kp.N_PF)], np.float64)
    pi = np.array([int(ints[k]) for k in range(kp.N_PI)], np.int64)
    _PARAMS_MEMO[0] = (cfg, costs, max_conc, pc_nkeys, pf, pi)
    return pf, pi


def _copy_tags(copy: np.ndarray | None, n: int, cfg: SchedulerConfig, nkeys: int) -> np.ndarray:
    """The attention copy of every request for the kernel, checked against `cfg`."""
    if cfg.copies < 1 or cfg.num_blocks % cfg.copies:
        raise ApexError(
            f"{cfg.num_blocks} KV blocks cannot be split over {cfg.copies} attention copies"
        )
    if cfg.copies > 1 and nkeys > 0:
        raise ApexError("the prefix cache is not simulated with several attention copies")
    if cfg.admission == kp.ADMIT_TOKEN_RATIO and cfg.chunked:
        raise ApexError("SGLang's admission rule runs with prefill-only steps (chunked off)")
    if cfg.num_scheduler_steps < 1 or (
        cfg.num_scheduler_steps > 1 and (cfg.chunked or cfg.admission != kp.ADMIT_WHOLE_PROMPT)
    ):
        raise ApexError(
            "multi-step scheduling is simulated with vLLM V0's prefill-only steps (chunked "
            f"prefill off), got {cfg.num_scheduler_steps} steps"
        )
    if copy is None:
        return np.zeros(n, np.int64)
    tags = np.ascontiguousarray(copy, dtype=np.int64)
    if tags.size != n or (n and (tags.min() < 0 or tags.max() >= cfg.copies)):
        raise ApexError(f"copy must give each request an attention copy in 0..{cfg.copies - 1}")
    return tags


def _dense_keys(
    block_keys: tuple[np.ndarray, np.ndarray] | None, prompt: np.ndarray, block_size: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Keys renumbered 0..K-1 for the kernel, (keys, offsets, K); no keys: K = 0."""
    n = prompt.size
    if block_keys is None:
        return np.zeros(0, np.int64), np.zeros(n + 1, np.int64), 0
    keys = np.ascontiguousarray(block_keys[0], dtype=np.int64)
    off = np.ascontiguousarray(block_keys[1], dtype=np.int64)
    if off.size != n + 1 or off[0] != 0 or off[-1] != keys.size or np.any(np.diff(off) < 0):
        raise ApexError("block_keys offsets must run from 0 to the number of keys, one per request")
    if np.any(np.diff(off) > prompt // block_size):
        raise ApexError("a request has more block keys than full prompt blocks")
    if keys.size == 0:
        return keys, off, 0
    uniq, dense = np.unique(keys, return_inverse=True)
    return np.ascontiguousarray(dense, dtype=np.int64), off, int(uniq.size)

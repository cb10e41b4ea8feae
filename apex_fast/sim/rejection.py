"""Requests a plan can never serve, and the one place that says why.

The scheduler kernel (kernels/batching.py, docs/scheduler.md) rejects a request at admission
when its KV cache so far (prefix + prompt + tokens generated before a preemption, in blocks)
exceeds its stream's blocks less the watermark of the engine's admission rule (vLLM V0's 1%), and, without chunked prefill, when its
prompt exceeds the step's token budget; a running request may grow into the watermark, and one
that outgrows every block is preempted and then rejected. With several attention copies a
sequence's KV cache must fit in the one copy that serves it (the kernel keeps a pool per copy),
so the bound that matters is one copy's share: `stream_kv_capacity`. `simulate_plan` (sim/engine.py) and the "no plan fits"
message (search/diagnose.py) take their numbers and words from here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from apex_fast.plans.memory import MemoryReport, copy_seq_blocks
from apex_fast.sim.engine_params import watermark_fraction
from apex_fast.sim.stream import SchedulerConfig
from apex_fast.workload.types import Workload

if TYPE_CHECKING:
    from apex_fast.sim.engine import EngineOptions


def stream_kv_capacity(mem: MemoryReport, pp: int, opts: EngineOptions) -> int:
    """KV tokens one request can hold in one pipeline stream of a plan: its attention copy's
    share of the stream's blocks, less the watermark the engine's admission rule keeps free in
    that copy (0 when no block is left)."""
    return copy_seq_blocks(mem, pp, _watermark(opts)) * opts.block_size


def stream_kv_bytes(tokens: int, pp: int, opts: EngineOptions, kv_bytes_per_token: float) -> float:
    """KV bytes one device needs so that a stream holds a request of `tokens` tokens: the
    inverse of `stream_kv_capacity` (whole blocks, the watermark on top, `pp` stage streams)."""
    blocks = math.ceil(tokens / opts.block_size)
    return pp * blocks / (1 - _watermark(opts)) * opts.block_size * kv_bytes_per_token


def _watermark(opts: EngineOptions) -> float:
    return watermark_fraction(opts.admission_policy)


def numbered(ids: np.ndarray) -> str:
    """How a message names rejected requests: the count and the first five ids."""
    shown = ", ".join(str(int(i)) for i in ids[:5]) + (" ..." if ids.size > 5 else "")
    return f"{ids.size} request(s) (#{shown}; numbered from 0 in arrival order)"


def beyond_copy(
    workload: Workload, index: list[np.ndarray], mem: MemoryReport, pp: int, opts: EngineOptions
) -> tuple[list[np.ndarray], np.ndarray]:
    """Take out of every stream the requests whose full KV cache (prefix + prompt + output)
    exceeds one attention copy's capacity; they are what the kernel would reject once their KV
    outgrew the copy (its own rejection test, applied to the copy instead of the pool)."""
    limit = copy_seq_blocks(mem, pp, _watermark(opts))
    block_size = opts.block_size
    need = workload.prompt + workload.output
    if workload.prefix is not None:
        need = need + workload.prefix
    blocks = -(-need // block_size)
    bad = np.flatnonzero(blocks > limit)
    if bad.size == 0:
        return index, bad
    keep = blocks <= limit
    return [ids[keep[ids]] for ids in index], bad


def beyond_copy_reason(workload: Workload, rej: np.ndarray, copy_tokens: int) -> str:
    """Why requests taken out by `beyond_copy` make a plan infeasible."""
    total = int(np.max(workload.prompt[rej] + workload.output[rej]))
    return (
        f"{numbered(rej)} have prompts plus outputs up to {total} tokens, beyond the KV capacity "
        f"of one attention copy of this plan ({copy_tokens} KV tokens per copy and stream; a "
        "sequence's KV cache must fit in the copy that serves it)"
    )


def kernel_rejection_reason(workload: Workload, rej: np.ndarray, cfg: SchedulerConfig) -> str:
    """Why the kernel rejected requests `rej`: their prompt above the token budget without
    chunked prefill, else their KV cache (prompt alone, or prompt plus output once it grew)
    above the stream's blocks less the watermark."""
    longest = int(np.max(workload.prompt[rej]))
    cap_tokens = (cfg.num_blocks // cfg.copies - cfg.watermark) * cfg.block_size
    why = "KV capacity" if cfg.chunked or longest <= cfg.budget else "token budget"
    what = f"prompts up to {longest} tokens"
    if why == "KV capacity" and longest <= cap_tokens:  # rejected once their KV outgrew it
        total = int(np.max(workload.prompt[rej] + workload.output[rej]))
        what = f"prompts plus outputs up to {total} tokens"
    per = "per stream" if cfg.copies == 1 else "per attention copy and stream"
    return (
        f"{numbered(rej)} have {what}, beyond the {why} of this plan ({cap_tokens} KV tokens "
        f"{per}, budget {cfg.budget})"
    )


def over_budget_reason(workload: Workload, budget: int) -> str:
    """Prompts above the step's token budget, which no plan runs without chunked prefill."""
    ids = np.flatnonzero(workload.prompt > budget)
    return (
        f"{numbered(ids)} have prompts up to {int(workload.prompt.max())} tokens, more than the "
        f"token budget of {budget} (--max-num-batched-tokens) without chunked prefill; raise the "
        "budget or use --chunked-prefill"
    )


def over_capacity_reason(workload: Workload, capacity: int, plan_label: str) -> str:
    """Requests longer than the largest KV capacity per stream of any plan (`capacity` tokens,
    reached by `plan_label`): their prompts, else their prompts plus outputs."""
    need = workload.prompt + workload.output  # KV a request holds by its last token
    ids = np.flatnonzero(workload.prompt > capacity)
    what, lengths = "prompts", workload.prompt
    if ids.size == 0:
        ids, what, lengths = np.flatnonzero(need > capacity), "prompts plus outputs", need
    return (
        f"{numbered(ids)} have {what} up to {int(lengths[ids].max())} tokens, more than the KV "
        f"cache of any plan here (at most {capacity} tokens per stream, {plan_label})"
    )

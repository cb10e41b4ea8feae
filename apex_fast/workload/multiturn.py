"""Multi-turn chat traces: conversations whose every turn sends the whole conversation so far
(earlier messages and answers) plus a new message, so consecutive turns share a growing prompt
prefix, named by Mooncake-style hash ids (one id per `hash_block` prompt tokens) that the prefix
cache uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.workload.generators import arrivals, lengths
from apex_fast.workload.types import ordered_hashes

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
    hashes = ordered_hashes(ids, lens, order)
    return MultiTurnTrace(
        t[order] - t[order][0],
        prompt[order],
        ans[order],
        hashes["hash_ids"],
        hashes["hash_offsets"],
        conv[order],
        hash_block,
    )


def _segment_cumsum(x: np.ndarray, first: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Cumulative sums of x restarting at every segment (first index, length)."""
    c = np.cumsum(x)
    before = np.concatenate([[0], c])[first]
    return c - np.repeat(before, count)

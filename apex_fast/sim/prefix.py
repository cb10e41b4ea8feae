"""Prefix caching outside the kernel: the engine's block keys from a workload's prompt hashes,
and the data-parallel routers (docs/scheduler.md, "Prefix cache").

A workload's `hash_ids` give one id per prompt block of `hash_block` tokens (Mooncake: 512), an
id naming the prompt prefix that ends with its block. The engine caches blocks of its own size
`bs`: its block j holds tokens [j*bs, (j+1)*bs) and is identified by the prefix that ends with it,
i.e. by the hash block holding its last token e - 1 (e = (j+1)*bs) and the offset of that token
in it: key = hash_ids[(e-1) // H] * H + (e-1) % H. Two requests with the same id at that
position have the same tokens up to the end of that hash block, hence up to e. Only full engine
blocks inside the prompt that some id covers get a key (vLLM caches full blocks only).
"""

from __future__ import annotations

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.memo import put_bounded
from apex_fast.workload import Workload

ROUTERS = ("round-robin", "prefix")


def prefix_cache_blocker(workload: Workload, window_blocks: int) -> str:
    """Why prefix caching cannot be simulated for this workload and model ("" if it can)."""
    if workload.prefix is not None:
        return (
            "not simulated with extra KV per request (encoder-decoder cross-attention, "
            "speculative decoding, disaggregated decode)"
        )
    if window_blocks > 0:
        return "not simulated for sliding-window attention (per-layer block groups)"
    return ""


def block_keys(
    workload: Workload,
    ids: np.ndarray,
    block_size: int,
    copy: np.ndarray | None = None,
    copies: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """(keys, offsets) of the requests `ids` for run_stream: request ids[i] has the keys
    keys[offsets[i]:offsets[i+1]] for its first full prompt blocks (module docstring). With
    attention copies (`copies` > 1, `copy[i]` = the copy serving request i) every copy keeps
    its own cache: keys are tagged with the copy, so only requests of one copy share blocks."""
    n = ids.size
    if not workload.has_hash_ids:
        return np.zeros(0, np.int64), np.zeros(n + 1, np.int64)
    H = int(workload.hash_block)
    bs = int(block_size)
    hoff = workload.hash_offsets
    start = hoff[ids]
    m = hoff[ids + 1] - start  # hash ids per request
    nk = np.minimum(workload.prompt[ids] // bs, m * H // bs)
    off = np.zeros(n + 1, np.int64)
    np.cumsum(nk, out=off[1:])
    j = np.arange(off[-1], dtype=np.int64) - np.repeat(off[:-1], nk)
    last = (j + 1) * bs - 1  # last token of engine block j
    hid = workload.hash_ids[np.repeat(start, nk) + last // H]
    keys = hid * H + last % H
    if copies > 1 and copy is not None:
        keys = keys * copies + np.repeat(copy[ids], nk)
    return keys, off


def distinct_block_keys(
    workload: Workload, ids: np.ndarray, block_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(keys, offsets) as `block_keys` for a workload without prompt hashes, every prompt taken
    as distinct: request i's full prompt blocks get keys no other request has (numbered over
    the whole workload, so streams and attention copies never share one). No two requests hit
    each other's blocks; a preempted request can hit its own when it is recomputed."""
    bs = int(block_size)
    full = workload.prompt // bs  # full prompt blocks of every request
    base = np.zeros(full.size + 1, np.int64)
    np.cumsum(full, out=base[1:])
    nk = full[ids].astype(np.int64)
    off = np.zeros(ids.size + 1, np.int64)
    np.cumsum(nk, out=off[1:])
    j = np.arange(off[-1], dtype=np.int64) - np.repeat(off[:-1], nk)
    return np.repeat(base[ids], nk) + j, off


def stream_keys(
    workload: Workload,
    ids: np.ndarray,
    block_size: int,
    engine: str,
    copy: np.ndarray | None = None,
    copies: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The prompt-block keys of the requests `ids` with prefix caching on: from the workload's
    hashes (`block_keys`), or, for a workload without them, distinct keys per request when the
    engine keeps a preempted request's own blocks (EngineProfile
    .hashless_prompts_keep_own_blocks); otherwise none."""
    if not workload.has_hash_ids:
        from apex_fast.engines import get_engine

        if get_engine(engine).hashless_prompts_keep_own_blocks:
            return distinct_block_keys(workload, ids, block_size)
    return block_keys(workload, ids, block_size, copy, copies)


def copy_tags(n: int, index: list[np.ndarray], copies: int) -> np.ndarray:
    """Attention copy of every request when requests are dealt to the copies of their stream in
    turn (the batch split evenly, docs/scheduler.md "Prefix cache")."""
    tag = np.zeros(n, np.int64)
    for ids in index:
        tag[ids] = np.arange(ids.size) % copies
    return tag


def prefix_split(
    workload: Workload, dp: int, pp: int, block_size: int, copies: int = 1
) -> tuple[list[np.ndarray], np.ndarray]:
    """Prefix-aware routing over the dp x pp scheduler streams x `copies` attention copies
    (each has its own cache); (requests per stream, attention copy per request). A request goes
    to the cache that already holds the longest run of its leading block keys,
    ties (including no hit anywhere) to the stream with the fewest requests so far, then the
    lowest number. The router's view of a cache is every block key it has sent there (no
    eviction): an approximation of a router that tracks each engine's cached prefixes (vLLM
    production stack / SGLang router), made before the simulation, not from its state."""
    n = workload.num_requests
    streams = dp * pp
    units = streams * copies
    if units == 1:
        return [np.arange(n)], np.zeros(n, np.int64)
    # plans of one search share the workload: route it once per (caches, block size)
    memo = (id(workload), units, block_size)
    hit = _SPLITS.get(memo)
    if hit is not None and hit[0] is workload:
        where = hit[1]
    else:
        where = _prefix_route(workload, units, block_size)
        put_bounded(_SPLITS, memo, (workload, where), _SPLITS_MAX)
    stream = where // copies
    order = np.argsort(stream, kind="stable")
    bounds = np.searchsorted(stream[order], np.arange(streams + 1))
    return [order[bounds[s] : bounds[s + 1]] for s in range(streams)], where % copies


_SPLITS: dict[tuple[int, int, int], tuple[Workload, np.ndarray]] = {}
_SPLITS_MAX = 8  # routed workloads kept (one search routes its workload once per cache count)


def _prefix_route(workload: Workload, streams: int, block_size: int) -> np.ndarray:
    """The cache (0..streams-1) each request is sent to."""
    n = workload.num_requests
    keys, off = block_keys(workload, np.arange(n), block_size)
    seen: list[set[int]] = [set() for _ in range(streams)]
    load = np.zeros(streams, np.int64)
    where = np.empty(n, np.int64)
    kl = keys.tolist()
    for i in range(n):
        mine = kl[off[i] : off[i + 1]]
        best, best_len = 0, -1
        for s in range(streams):
            h = 0
            cache = seen[s]
            for k in mine:
                if k not in cache:
                    break
                h += 1
            if h > best_len or (h == best_len and load[s] < load[best]):
                best, best_len = s, h
        where[i] = best
        load[best] += 1
        seen[best].update(mine)
    return where


def check_router(router: str) -> None:
    if router not in ROUTERS:
        raise ApexError(f"unknown --router {router!r}: use one of {', '.join(ROUTERS)}")


def cache_stats(cached: np.ndarray, prompt: np.ndarray, served: np.ndarray) -> tuple[float, int]:
    """(hit rate, cached prompt tokens) over the served requests: the prompt tokens found in
    the cache at each request's first admission over all their prompt tokens."""
    tot = int(prompt[served].sum())
    hit = int(cached[served].sum())
    return (hit / tot if tot else 0.0), hit

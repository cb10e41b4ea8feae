"""KV-block allocator of the scheduler kernel, with the prefix-cache block pool (Numba).

The scheduler (kernels/batching.py) sees only the allocator interface at the end of this module:
`free` (blocks no running request references, all attention copies together) is a scalar the
kernel keeps, and every operation takes it and returns its new value: `kv_admit` (a request's
blocks at admission), `kv_extend` (grow a running request's blocks), `kv_free` (release them
all). With the prefix cache off they are counter arithmetic; on, they also move blocks through
the pool `pool` (below).

KV per attention copy (docs/memory.md): a stream whose stage copies attention `PI_COPIES` times
has one pool of num_blocks / copies blocks per copy. `copy[r]` is the copy serving request r
(fixed when the request is routed, before the simulation) and `cfree[c]` the free blocks of copy
c; every operation moves r's blocks in and out of cfree[copy[r]] as well as `free`. With one
copy cfree[0] == free. The prefix-cache pool has one free queue, so it runs with one copy only
(sim/stream.run_stream refuses the combination).

Prefix cache (vLLM V1 KVCacheManager / BlockPool semantics; docs/scheduler.md, "Prefix cache").
Requests carry dense block keys: request r's hashed blocks are positions 0..nk-1 with keys
pc_key[pc_off[r] + j] in 0..K-1 (a key names the prompt prefix that ends with that block). The
pool is one tuple of typed arrays, (pc_key, pc_off, kref, held, nreg, q, rstk, pcs):
  kref[k]  -1: no cached block holds key k; 0: a cached block, unreferenced (in the free
           queue, evictable); m > 0: a cached block referenced by m running requests
  held[p]  request position p holds the cached block of its key (else an anonymous block)
  nreg[r]  positions of r already looked up or registered
  q[0|1|2, x]  the free queue as a doubly linked list (prev, next, count): node x < K is the
           cached block of key x, K <= x < S an anonymous run of q[2, x] blocks, S the sentinel
  rstk     stack of unused run nodes; pcs = (K, S, stack top)
The queue holds exactly `free` blocks; allocation takes blocks from its head (a cached key there
is evicted), a request's freed blocks join its tail in reverse order.
The pool functions with loops are plain calls, not inlined, and the allocator touches the pool
only behind `if pc`: passing arrays costs reference counting on every call, which on the decode
path doubled the kernel's time with the cache off when the pool was passed unconditionally.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def blocks_for(tokens: int, bs: int, win_blocks: int, full_frac: float) -> int:
    """KV blocks a sequence of `tokens` tokens holds, counted in blocks of every layer: the
    full-attention layers (share `full_frac` of the KV bytes) keep all ceil(tokens / bs) blocks,
    the sliding-window layers at most `win_blocks` (0: no window, every layer keeps all)."""
    c = (tokens + bs - 1) // bs
    if win_blocks <= 0 or c <= win_blocks:
        return c
    return int(np.ceil(full_frac * c + (1.0 - full_frac) * win_blocks))


# --------------------------------------------------------------------------- prefix-cache pool


@njit(cache=True)
def pool_new(num_blocks, nkeys, pc_key, pc_off, n):
    """The pool of a stream with `nkeys` distinct keys (all `num_blocks` blocks free, in one
    anonymous run); tiny arrays when the cache is off (nkeys = 0)."""
    pc = nkeys > 0
    K = nkeys if pc else 0
    R = num_blocks + 1 if pc else 1
    S = K + R
    q = np.zeros((3, S + 1), np.int64)
    q[0, S] = S
    q[1, S] = S
    rstk = np.arange(K, K + R)
    pcs = np.array([K, S, R])
    kref = np.full(max(K, 1), -1, np.int64)
    held = np.zeros(max(pc_key.shape[0], 1), np.bool_)
    nreg = np.zeros(max(n, 1), np.int64)
    if pc:
        _push_anon(num_blocks, q, rstk, pcs)
    return (pc_key, pc_off, kref, held, nreg, q, rstk, pcs)


@njit(cache=True, inline="always")
def _q_unlink(x, q):
    p = q[0, x]
    nx = q[1, x]
    q[1, p] = nx
    q[0, nx] = p


@njit(cache=True, inline="always")
def _q_append(x, q, S):
    t = q[0, S]
    q[1, t] = x
    q[0, x] = t
    q[1, x] = S
    q[0, S] = x


@njit(cache=True)
def _push_anon(m, q, rstk, pcs):
    """Append m anonymous blocks to the tail of the free queue (merged into a tail run)."""
    if m <= 0:
        return
    K = pcs[0]
    S = pcs[1]
    t = q[0, S]
    if t >= K and t != S:
        q[2, t] += m
        return
    pcs[2] -= 1
    x = rstk[pcs[2]]
    q[2, x] = m
    _q_append(x, q, S)


@njit(cache=True)
def pool_take(m, pool):
    """Allocate m blocks from the head of the free queue, evicting the cached keys met."""
    _, _, kref, _, _, q, rstk, pcs = pool
    K = pcs[0]
    S = pcs[1]
    while m > 0:
        x = q[1, S]
        if x >= K:
            take = min(q[2, x], m)
            q[2, x] -= take
            m -= take
            if q[2, x] == 0:
                _q_unlink(x, q)
                rstk[pcs[2]] = x
                pcs[2] += 1
        else:
            kref[x] = -1  # the block is reused: its hash is dropped
            _q_unlink(x, q)
            m -= 1


@njit(cache=True)
def pool_lookup(r, tgt, bs, pool):
    """Longest cached prefix of r: (hit blocks h, of them already referenced). At most
    (tgt - 1) // bs blocks, so the last token is always computed."""
    pc_key, pc_off, kref = pool[0], pool[1], pool[2]
    base = pc_off[r]
    lim = min(pc_off[r + 1] - base, (tgt - 1) // bs)
    h = 0
    shared = 0
    while h < lim:
        k = pc_key[base + h]
        if kref[k] < 0:
            break
        if kref[k] > 0:
            shared += 1
        h += 1
    return h, shared


@njit(cache=True)
def _pool_admit(r, h, new, pool):
    """Give r its h hit blocks and `new` fresh ones; returns the free blocks consumed."""
    pc_key, pc_off, kref, held, nreg, q, _, _ = pool
    base = pc_off[r]
    used = new
    for j in range(h):
        k = pc_key[base + j]
        if kref[k] == 0:
            _q_unlink(k, q)  # touched: out of the free queue
            used += 1
        kref[k] += 1
        held[base + j] = True
    nreg[r] = h
    pool_take(new, pool)
    return used


@njit(cache=True)
def pool_register(r, done, bs, pool):
    """Cache r's blocks that `done` computed (or scheduled) tokens fill, unless another block
    already holds the key (r's copy then stays anonymous)."""
    pc_key, pc_off, kref, held, nreg = pool[0], pool[1], pool[2], pool[3], pool[4]
    base = pc_off[r]
    lim = min(pc_off[r + 1] - base, done // bs)
    while nreg[r] < lim:
        p = base + nreg[r]
        k = pc_key[p]
        if kref[k] < 0:
            kref[k] = 1
            held[p] = True
        nreg[r] += 1


@njit(cache=True)
def _pool_release(r, nblocks, pool):
    """Free r's `nblocks` blocks, last first; returns the blocks that became free."""
    pc_key, pc_off, kref, held, nreg, q, rstk, pcs = pool
    base = pc_off[r]
    npos = min(pc_off[r + 1] - base, nblocks)
    freed = nblocks - npos
    _push_anon(freed, q, rstk, pcs)
    for j in range(npos - 1, -1, -1):
        p = base + j
        if held[p]:
            held[p] = False
            k = pc_key[p]
            kref[k] -= 1
            if kref[k] == 0:
                _q_append(k, q, pcs[1])
                freed += 1
        else:
            _push_anon(1, q, rstk, pcs)
            freed += 1
    nreg[r] = 0
    return freed


# --------------------------------------------------------------------------- allocator


@njit(cache=True, inline="always")
def kv_admit(free, r, hit, need, done, bs, blocks, pc, pool, copy, cfree):
    """Admit r with `need` blocks of which `hit` are cached prompt blocks; `done` tokens are
    computed or scheduled (their full blocks are cached). The blocks come from r's attention
    copy copy[r] (cfree: free blocks per copy). Returns the new free count (all copies)."""
    blocks[r] = need
    if pc:
        used = _pool_admit(r, hit, need - hit, pool)
        pool_register(r, done, bs, pool)
        cfree[copy[r]] -= used
        return free - used
    cfree[copy[r]] -= need
    return free - need


@njit(cache=True, inline="always")
def kv_extend(free, r, nb, blocks, pc, pool, copy, cfree):
    """Grow running r's blocks to `nb` (>= blocks[r]) from its copy. Returns the new free count."""
    m = nb - blocks[r]
    if pc:
        pool_take(m, pool)
    blocks[r] = nb
    cfree[copy[r]] -= m
    return free - m


@njit(cache=True, inline="always")
def kv_free(free, r, blocks, pc, pool, copy, cfree):
    """Release all of r's blocks to its copy. Returns the new free count."""
    if pc:
        freed = _pool_release(r, blocks[r], pool)
    else:
        freed = blocks[r]
    cfree[copy[r]] += freed
    blocks[r] = 0
    return free + freed

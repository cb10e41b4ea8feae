"""Continuous-batching scheduler kernel (vLLM 0.6 semantics, docs/scheduler.md), compiled by Numba.

Pure function over arrays: inputs are typed NumPy arrays and scalars, outputs are written into
preallocated arrays. The pure-Python oracle of the same rules is `tests/oracle.py`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Inter-token gap histogram: log-spaced bins from 1e-7 s to 1e4 s, 400 per decade (0.58% wide).
GAP_LOG_MIN = -7.0
GAP_BINS_PER_DECADE = 400
GAP_BINS = 11 * GAP_BINS_PER_DECADE

# status codes
_NOT_ARRIVED = 0
_WAITING = 1
_RUNNING = 2
_FINISHED = 3
_REJECTED = 4


def gap_bin_edges() -> np.ndarray:
    """Edges (seconds) of the gap histogram bins; bin i holds gaps in [edges[i], edges[i+1])."""
    return 10.0 ** (GAP_LOG_MIN + np.arange(GAP_BINS + 1) / GAP_BINS_PER_DECADE)


@njit(cache=True, inline="always")
def _gap_bin(g: float) -> int:
    if g <= 0.0:
        return 0
    b = int(np.floor((np.log10(g) - GAP_LOG_MIN) * GAP_BINS_PER_DECADE))
    if b < 0:
        return 0
    if b >= GAP_BINS:
        return GAP_BINS - 1
    return b


@njit(cache=True, inline="always")
def _gap_bin_safe_hi(b: int) -> float:
    """A bound below the upper edge of bin b such that every gap g in [g_b, bound), where
    _gap_bin(g_b) == b, also has _gap_bin(g) == b (the margin of 1e-12 relative covers the
    rounding of log10 in _gap_bin, ~1e-15 relative)."""
    if b >= GAP_BINS - 1:
        return np.inf
    return 10.0 ** (GAP_LOG_MIN + (b + 1) / GAP_BINS_PER_DECADE) * (1.0 - 1e-12)


@njit(cache=True, inline="always")
def _launch_floor(n_pf_tok, n_dec, tokens, graph_max_seqs, eager, piecewise_tokens, piecewise):
    """Launch floor of a step (0 when a decode-only batch replays a captured CUDA graph)."""
    if n_pf_tok == 0 and n_dec <= graph_max_seqs:
        return 0.0
    if tokens <= piecewise_tokens:
        return piecewise
    return eager


@njit(cache=True, inline="always")
def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


@njit(cache=True, inline="always")
def _kv_blocks(tokens: int, bs: int, win_blocks: int, full_frac: float) -> int:
    """KV blocks a sequence of `tokens` tokens holds, counted in blocks of every layer: the
    full-attention layers (share `full_frac` of the KV bytes) keep all ceil(tokens / bs) blocks,
    the sliding-window layers at most `win_blocks` (0: no window, every layer keeps all)."""
    c = (tokens + bs - 1) // bs
    if win_blocks <= 0 or c <= win_blocks:
        return c
    return int(np.ceil(full_frac * c + (1.0 - full_frac) * win_blocks))


# --------------------------------------------------------------------------- prefix cache
# Automatic prefix caching (vLLM V1 KVCacheManager / BlockPool semantics; docs/scheduler.md,
# "Prefix cache"). Requests carry dense block keys: request r's hashed blocks are positions
# 0..nk-1 with keys pc_key[pc_off[r] + j] in 0..K-1 (a key names the prompt prefix that ends with
# that block). State, all typed arrays:
#   kref[k]  -1: no cached block holds key k; 0: a cached block, unreferenced (in the free
#            queue, evictable); m > 0: a cached block referenced by m running requests
#   held[p]  request position p holds the cached block of its key (else an anonymous block)
#   nreg[r]  positions of r already looked up or registered
#   q[0|1|2, x]  the free queue as a doubly linked list (prev, next, count): node x < K is the
#            cached block of key x, K <= x < S an anonymous run of q[2, x] blocks, S the sentinel
#   rstk     stack of unused run nodes; pcs = (K, S, stack top)
# The queue holds exactly `free` blocks; allocation takes blocks from its head (a cached key
# there is evicted), a request's freed blocks join its tail in reverse order.
# The helpers with loops are plain calls, not inlined, and simulate_stream touches the cache's
# arrays only behind `if pc`: passing arrays costs reference counting on every call, which on
# the decode path (_make_room vs _make_room_pc) doubled the kernel's time with the cache off.


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
def _pc_push_anon(m, q, rstk, pcs):
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
def _pc_take(m, kref, q, rstk, pcs):
    """Allocate m blocks from the head of the free queue, evicting the cached keys met."""
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
def _pc_lookup(r, tgt, bs, pc_key, pc_off, kref):
    """Longest cached prefix of r: (hit blocks h, of them already referenced). At most
    (tgt - 1) // bs blocks, so the last token is always computed."""
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
def _pc_admit(r, h, new, pc_key, pc_off, kref, held, nreg, q, rstk, pcs):
    """Give r its h hit blocks and `new` fresh ones; returns the free blocks consumed."""
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
    _pc_take(new, kref, q, rstk, pcs)
    return used


@njit(cache=True)
def _pc_register(r, done, bs, pc_key, pc_off, kref, held, nreg):
    """Cache r's blocks that `done` computed (or scheduled) tokens fill, unless another block
    already holds the key (r's copy then stays anonymous)."""
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
def _pc_release(r, nblocks, pc_key, pc_off, kref, held, nreg, q, rstk, pcs):
    """Free r's `nblocks` blocks, last first; returns the blocks that became free."""
    base = pc_off[r]
    npos = min(pc_off[r + 1] - base, nblocks)
    freed = nblocks - npos
    _pc_push_anon(freed, q, rstk, pcs)
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
            _pc_push_anon(1, q, rstk, pcs)
            freed += 1
    nreg[r] = 0
    return freed


@njit(cache=True, inline="always")
def _mark_preempted(v, blocks, computed, status, pre_buf, npre, preemptions):
    """Running request `v` loses its KV blocks (already returned to the pool by the caller) and
    queues for recompute; returns the new count of this step's preempted requests."""
    blocks[v] = 0
    computed[v] = 0
    status[v] = _WAITING
    pre_buf[npre] = v
    preemptions[v] += 1
    return npre + 1


@njit(cache=True, inline="always")
def _make_room(r, deficit, run, nrun, free, blocks, computed, status, pre_buf, npre, preemptions):
    """Give running request `r` the `deficit` blocks its next token needs, preempting the most
    recently admitted running requests (recompute) while blocks are short. Returns the new
    (nrun, free, npre, r_itself_preempted); on success the blocks are allocated to `r`."""
    while free < deficit:
        v = run[nrun - 1]
        nrun -= 1
        free += blocks[v]
        npre = _mark_preempted(v, blocks, computed, status, pre_buf, npre, preemptions)
        if v == r:
            return nrun, free, npre, True
    if deficit > 0:
        blocks[r] += deficit
        free -= deficit
    return nrun, free, npre, False


@njit(cache=True)
def _make_room_pc(
    r, deficit, run, nrun, free, blocks, computed, status, pre_buf, npre, preemptions,
    pc_key, pc_off, kref, held, nreg, q, rstk, pcs,
):  # fmt: skip
    """_make_room with the prefix cache: a victim frees only the blocks no other running
    request references, and new blocks come from the free queue's head. (A separate function:
    the cache's arrays are not touched at all when it is off.)"""
    while free < deficit:
        v = run[nrun - 1]
        nrun -= 1
        free += _pc_release(v, blocks[v], pc_key, pc_off, kref, held, nreg, q, rstk, pcs)
        npre = _mark_preempted(v, blocks, computed, status, pre_buf, npre, preemptions)
        if v == r:
            return nrun, free, npre, True
    if deficit > 0:
        blocks[r] += deficit
        free -= deficit
        _pc_take(deficit, kref, q, rstk, pcs)
    return nrun, free, npre, False


@njit(cache=True)
def simulate_stream(
    arrival,
    prompt,
    output,
    prefix,
    num_blocks,
    block_size,
    watermark,
    max_num_seqs,
    budget,
    chunked,
    tok_table,
    seq_table,
    c_attn,
    c_ctx,
    overhead,
    host_seq,
    eager_floor,
    output_lag,
    first_token,
    finish,
    preemptions,
    rec_f,
    rec_i,
    gap_hist,
    max_conc,
    arr_eff,
    pc_key,
    pc_off,
    pc_nkeys,
    cached_out,
    win_blocks=0,
    full_frac=1.0,
    graph_max_seqs=1 << 62,
    piecewise_tokens=0,
    piecewise_floor=0.0,
):
    """Simulate one scheduler stream. Returns the number of records written, or -1 if `rec_f`
    is too small (the caller retries with more room).

    Closed loop (`max_conc` > 0): at most `max_conc` requests are in the system (queued or
    running) at once, as behind a FIFO semaphore of that many slots (vLLM bench
    `--max-concurrency`): request i enters at max(arrival[i], the time the slot it takes was
    freed), a slot being freed when a request's last token is delivered or it is rejected.
    `arr_eff` receives every request's entry time (= arrival when `max_conc` is 0).

    Prefix caching (`pc_nkeys` > 0; docs/scheduler.md "Prefix cache"): request r's first
    pc_off[r+1] - pc_off[r] prompt blocks have the keys pc_key[pc_off[r]:pc_off[r+1]] (dense,
    0..pc_nkeys-1); cached blocks are reused across the requests of this stream and evicted
    LRU from the free queue. `cached_out[r]`: prompt tokens found cached at r's first admission.

    rec_f[r] = (start, d0, dd, work); rec_i[r] = (count, prefill_tokens, n_decode, n_samp, ctx0,
    blocks_used, n_sched). Step j of a record lasts d0 + dd*j.
    `win_blocks` / `full_frac`: sliding-window KV (blocks per sequence as in _kv_blocks).
    Launch floors (sim/step_time.py): a decode-only step of at most `graph_max_seqs` sequences
    replays a CUDA graph (no floor); any other step lasts at least host + `eager_floor`, or
    host + `piecewise_floor` when it holds at most `piecewise_tokens` tokens (piecewise graphs).
    """
    n = arrival.shape[0]
    cap = rec_f.shape[0]
    bs = block_size
    status = np.zeros(n, np.int64)
    computed = np.zeros(n, np.int64)
    gen = np.zeros(n, np.int64)
    target = np.zeros(n, np.int64)
    blocks = np.zeros(n, np.int64)
    last_tok = np.zeros(n, np.float64)
    waitq = np.empty(max(n, 1), np.int64)
    whead = 0
    wsize = 0
    run = np.empty(max(n, 1), np.int64)
    nrun = 0
    # per-step schedule
    s_idx = np.empty(max(n, 1), np.int64)
    s_tok = np.empty(max(n, 1), np.int64)
    s_pf = np.empty(max(n, 1), np.bool_)
    pre_buf = np.empty(max(n, 1), np.int64)
    # tokens whose delivery waits for the next step (async output processing)
    lag_idx = np.empty(max(n, 1), np.int64)
    lag_kind = np.empty(max(n, 1), np.int64)  # 1 = first token, 2 = finish, 3 = both
    nlag = 0
    # closed loop: FIFO ring of the times free slots were released
    nslot = max(max_conc, 1)
    slot_t = np.full(nslot, -np.inf)
    shead = 0
    nfree = max_conc
    for i in range(n):
        first_token[i] = -1.0
        finish[i] = -1.0
        preemptions[i] = 0
        arr_eff[i] = arrival[i]
    free = num_blocks
    # prefix cache state (helpers above); tiny arrays when off
    pc = pc_nkeys > 0
    pcK = pc_nkeys if pc else 0
    pcR = num_blocks + 1 if pc else 1
    pcS = pcK + pcR
    q = np.zeros((3, pcS + 1), np.int64)
    q[0, pcS] = pcS
    q[1, pcS] = pcS
    rstk = np.arange(pcK, pcK + pcR)
    pcs = np.array([pcK, pcS, pcR])
    kref = np.full(max(pcK, 1), -1, np.int64)
    held = np.zeros(max(pc_key.shape[0], 1), np.bool_)
    nreg = np.zeros(max(n, 1), np.int64)
    if pc:
        _pc_push_anon(num_blocks, q, rstk, pcs)
    for i in range(n):
        cached_out[i] = -1
    now = 0.0
    next_arr = 0
    nrec = 0
    while True:
        # 1. arrivals join the back of the waiting queue
        while next_arr < n and arrival[next_arr] <= now:
            if max_conc > 0:
                if nfree == 0:
                    break
                arr_eff[next_arr] = max(arrival[next_arr], slot_t[shead])
                shead = (shead + 1) % nslot
                nfree -= 1
            waitq[(whead + wsize) % n] = next_arr
            wsize += 1
            status[next_arr] = _WAITING
            next_arr += 1
        # 2. idle: jump to the next arrival
        if nrun == 0 and wsize == 0:
            if max_conc > 0 and nlag > 0:
                # pending outputs are processed at once: their finishes free slots now
                for t in range(nlag):
                    if lag_kind[t] & 2:
                        slot_t[(shead + nfree) % nslot] = finish[lag_idx[t]]
                        nfree += 1
                nlag = 0
                continue
            nlag = 0  # the engine goes idle: pending outputs are processed at once
            if next_arr >= n:
                break
            now = max(now, arrival[next_arr])
            continue
        n_sched = 0
        tokens = 0
        n_samp = 0
        n_pf_tok = 0
        n_dec = 0
        work = 0.0
        ctx = 0
        npre = 0
        if not chunked:
            # 4a. prefills only
            while wsize > 0:
                r = waitq[whead]
                tgt = prompt[r] + gen[r]
                need_b = _kv_blocks(prefix[r] + tgt, bs, win_blocks, full_frac)
                if need_b > num_blocks - watermark or tgt > budget:
                    whead = (whead + 1) % n
                    wsize -= 1
                    status[r] = _REJECTED
                    first_token[r] = -1.0
                    if max_conc > 0:
                        slot_t[(shead + nfree) % nslot] = now
                        nfree += 1
                    continue
                hit = 0
                shared = 0
                if pc:
                    hit, shared = _pc_lookup(r, tgt, bs, pc_key, pc_off, kref)
                cached = hit * bs
                u = tgt - cached  # tokens to compute
                if (
                    tokens + u > budget
                    or nrun + 1 > max_num_seqs
                    or free - (need_b - shared) < watermark
                ):
                    break
                whead = (whead + 1) % n
                wsize -= 1
                blocks[r] = need_b
                if pc:
                    free -= _pc_admit(
                        r, hit, need_b - hit, pc_key, pc_off, kref, held, nreg, q, rstk, pcs
                    )
                    _pc_register(r, tgt, bs, pc_key, pc_off, kref, held, nreg)
                else:
                    free -= need_b
                if cached_out[r] < 0:
                    cached_out[r] = cached
                target[r] = tgt
                computed[r] = tgt
                status[r] = _RUNNING
                run[nrun] = r
                nrun += 1
                s_idx[n_sched] = r
                s_tok[n_sched] = u
                s_pf[n_sched] = True
                n_sched += 1
                tokens += u
                n_pf_tok += u
                n_samp += 1
                work += u * (prefix[r] + cached + (u + 1) / 2.0)
            if n_sched == 0:
                # 4c. decodes
                i = 0
                while i < nrun:
                    if tokens + 1 > budget:
                        break
                    r = run[i]
                    L = prefix[r] + prompt[r] + gen[r]
                    deficit = _kv_blocks(L, bs, win_blocks, full_frac) - blocks[r]
                    if pc:
                        nrun, free, npre, self_pre = _make_room_pc(
                            r, deficit, run, nrun, free, blocks, computed, status, pre_buf,
                            npre, preemptions, pc_key, pc_off, kref, held, nreg, q, rstk, pcs,
                        )  # fmt: skip
                    else:
                        nrun, free, npre, self_pre = _make_room(
                            r, deficit, run, nrun, free, blocks, computed, status, pre_buf,
                            npre, preemptions,
                        )  # fmt: skip
                    if self_pre:
                        break
                    s_idx[n_sched] = r
                    s_tok[n_sched] = 1
                    s_pf[n_sched] = False
                    n_sched += 1
                    tokens += 1
                    n_dec += 1
                    n_samp += 1
                    ctx += L
                    i += 1
        else:
            left = budget
            # 5a. running requests in order: prefill chunks and decodes
            i = 0
            while i < nrun:
                r = run[i]
                if computed[r] < target[r]:
                    c = min(target[r] - computed[r], left)
                    if c == 0:
                        break
                    cb = computed[r]
                    computed[r] += c
                    left -= c
                    if pc:
                        _pc_register(r, computed[r], bs, pc_key, pc_off, kref, held, nreg)
                    s_idx[n_sched] = r
                    s_tok[n_sched] = c
                    s_pf[n_sched] = True
                    n_sched += 1
                    tokens += c
                    n_pf_tok += c
                    work += c * (prefix[r] + cb + (c + 1) / 2.0)
                    if computed[r] == target[r]:
                        n_samp += 1
                    i += 1
                    continue
                if left == 0:
                    break
                L = prefix[r] + prompt[r] + gen[r]
                deficit = _kv_blocks(L, bs, win_blocks, full_frac) - blocks[r]
                if pc:
                    nrun, free, npre, self_pre = _make_room_pc(
                        r, deficit, run, nrun, free, blocks, computed, status, pre_buf,
                        npre, preemptions, pc_key, pc_off, kref, held, nreg, q, rstk, pcs,
                    )  # fmt: skip
                else:
                    nrun, free, npre, self_pre = _make_room(
                        r, deficit, run, nrun, free, blocks, computed, status, pre_buf,
                        npre, preemptions,
                    )  # fmt: skip
                if self_pre:
                    break
                left -= 1
                s_idx[n_sched] = r
                s_tok[n_sched] = 1
                s_pf[n_sched] = False
                n_sched += 1
                tokens += 1
                n_dec += 1
                n_samp += 1
                ctx += L
                i += 1
            # 5b. new prefills (chunked), even after a preemption
            while wsize > 0:
                r = waitq[whead]
                tgt = prompt[r] + gen[r]
                need_b = _kv_blocks(prefix[r] + tgt, bs, win_blocks, full_frac)
                if need_b > num_blocks - watermark:
                    whead = (whead + 1) % n
                    wsize -= 1
                    status[r] = _REJECTED
                    first_token[r] = -1.0
                    if max_conc > 0:
                        slot_t[(shead + nfree) % nslot] = now
                        nfree += 1
                    continue
                hit = 0
                shared = 0
                if pc:
                    hit, shared = _pc_lookup(r, tgt, bs, pc_key, pc_off, kref)
                cached = hit * bs
                c = min(tgt - cached, left)
                if c == 0 or nrun + 1 > max_num_seqs or free - (need_b - shared) < watermark:
                    break
                whead = (whead + 1) % n
                wsize -= 1
                blocks[r] = need_b
                if pc:
                    free -= _pc_admit(
                        r, hit, need_b - hit, pc_key, pc_off, kref, held, nreg, q, rstk, pcs
                    )
                    _pc_register(r, cached + c, bs, pc_key, pc_off, kref, held, nreg)
                else:
                    free -= need_b
                if cached_out[r] < 0:
                    cached_out[r] = cached
                target[r] = tgt
                computed[r] = cached + c
                status[r] = _RUNNING
                run[nrun] = r
                nrun += 1
                left -= c
                s_idx[n_sched] = r
                s_tok[n_sched] = c
                s_pf[n_sched] = True
                n_sched += 1
                tokens += c
                n_pf_tok += c
                work += c * (prefix[r] + cached + (c + 1) / 2.0)
                if cached + c == tgt:
                    n_samp += 1
        # preempted requests rejoin the front of the waiting queue after this pass (vLLM
        # extendleft), so they are not re-admitted in the step that preempted them
        for t in range(npre):
            whead = (whead - 1 + n) % n
            waitq[whead] = pre_buf[t]
            wsize += 1
        if n_sched == 0:
            # everything scheduled got preempted or rejected: no time passes, schedule again
            continue
        if nrec >= cap:
            return -1
        # 6. cost of the first step
        host = overhead + host_seq * n_sched
        base = host + tok_table[tokens] + seq_table[n_samp] + c_attn * work
        d0 = base + c_ctx * ctx
        # a step that does not replay a whole CUDA graph cannot end before the CPU has
        # launched its kernels
        floor = _launch_floor(
            n_pf_tok, n_dec, tokens, graph_max_seqs, eager_floor, piecewise_tokens, piecewise_floor
        )
        floored = d0 - host < floor
        if floored:
            d0 = host + floor
        # outputs of the previous step are delivered when this step ends
        for t in range(nlag):
            r = lag_idx[t]
            if status[r] == _REJECTED:
                continue  # preempted, then found too long to ever fit: no output at all
            if lag_kind[t] & 1:
                first_token[r] += d0
            if lag_kind[t] & 2:
                finish[r] += d0
                if max_conc > 0:
                    slot_t[(shead + nfree) % nslot] = finish[r]
                    nfree += 1
        nlag = 0
        start = now
        now = start + d0
        k = 1
        # event skipping: a run of identical decode-only steps
        if n_pf_tok == 0 and npre == 0 and n_dec == nrun and n_dec > 0:
            kmax = 1 << 62
            for t in range(n_sched):
                r = s_idx[t]
                rem = output[r] - gen[r]
                if rem < kmax:
                    kmax = rem
            ext_blk = bs * (free // n_dec)  # a window only slows the growth: still safe
            if kmax - 1 > ext_blk:
                kmax = ext_blk + 1
            limit_t = np.inf
            if wsize == 0 and next_arr < n and (max_conc == 0 or nfree > 0):
                limit_t = arrival[next_arr]
            # the gap of step k is d; consecutive d are (nearly always) in the same histogram
            # bin, so the bin is recomputed only when d leaves [d_lo, d_hi): same counts as
            # binning every step, without a log10 per step
            b = 0
            cnt = 0
            d_lo = np.inf
            d_hi = -np.inf
            while k < kmax and now < limit_t:
                d = base + c_ctx * (ctx + n_dec * k)
                if floored:
                    if d - host >= floor:
                        break  # the GPU now outlasts the launches: a new record starts
                    d = host + floor
                if d < d_lo or d >= d_hi:
                    gap_hist[b] += cnt * n_dec
                    cnt = 0
                    b = _gap_bin(d)
                    d_lo = d
                    d_hi = _gap_bin_safe_hi(b)
                cnt += 1
                now += d
                k += 1
            gap_hist[b] += cnt * n_dec
        rec_f[nrec, 0] = start
        rec_f[nrec, 1] = d0
        rec_f[nrec, 2] = 0.0 if floored else c_ctx * n_dec
        rec_f[nrec, 3] = work
        rec_i[nrec, 0] = k
        rec_i[nrec, 1] = n_pf_tok
        rec_i[nrec, 2] = n_dec
        rec_i[nrec, 3] = n_samp
        rec_i[nrec, 4] = ctx
        rec_i[nrec, 6] = n_sched
        # 7. tokens, first tokens, completions
        end_first = start + d0
        if k > 1:
            # extra blocks for the skipped steps: step j writes the KV of context L + j
            for t in range(n_sched):
                r = s_idx[t]
                L = prefix[r] + prompt[r] + gen[r]
                nb = _kv_blocks(L + k - 1, bs, win_blocks, full_frac)
                free -= nb - blocks[r]
                if pc:
                    _pc_take(nb - blocks[r], kref, q, rstk, pcs)
                blocks[r] = nb
        rec_i[nrec, 5] = num_blocks - free
        nrec += 1
        any_done = False
        g_prev = np.nan  # sequences of one batch mostly share their gap: bin it once
        b_prev = 0
        for t in range(n_sched):
            r = s_idx[t]
            if s_pf[t] and computed[r] < target[r]:
                continue  # a prefill chunk that does not finish the prompt samples nothing
            kind = 0
            if gen[r] >= 1:
                g = end_first - last_tok[r]
                if g != g_prev:
                    g_prev = g
                    b_prev = _gap_bin(g)
                gap_hist[b_prev] += 1
            else:
                first_token[r] = end_first
                kind = 1
            gen[r] += k
            last_tok[r] = now
            if gen[r] >= output[r]:
                finish[r] = now
                status[r] = _FINISHED
                if pc:
                    free += _pc_release(
                        r, blocks[r], pc_key, pc_off, kref, held, nreg, q, rstk, pcs
                    )
                else:
                    free += blocks[r]
                blocks[r] = 0
                any_done = True
                kind |= 2
                if max_conc > 0 and not output_lag:
                    slot_t[(shead + nfree) % nslot] = now
                    nfree += 1
            if output_lag and kind:
                lag_idx[nlag] = r
                lag_kind[nlag] = kind
                nlag += 1
        if any_done:
            m = 0
            for i in range(nrun):
                r = run[i]
                if status[r] == _RUNNING:
                    run[m] = r
                    m += 1
            nrun = m
    for i in range(n):
        if cached_out[i] < 0 or status[i] == _REJECTED:
            cached_out[i] = 0
    return nrec

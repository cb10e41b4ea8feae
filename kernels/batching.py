"""Continuous-batching scheduler kernel (vLLM 0.6 semantics, docs/scheduler.md), compiled by Numba.

Pure function over arrays: inputs are typed NumPy arrays (the scalar parameters packed into two,
kernels/params.py), outputs are written into preallocated arrays. The pure-Python oracle of the
same rules is `tests/oracle.py`, written in the same phases:

  _queue_arrivals     rule 1: arrivals join the back of the waiting queue (closed-loop slots)
  _admit_waiting      rules 3, 4a, 5b: reject or admit the head of the waiting queue
  _schedule_running   rules 4c, 5a: prefill chunks and decodes of the running requests
  _make_room          rule 4c: blocks for a decode, preempting the newest requests
  _step_cost          rule 6: duration of the step, launch floors
  _deliver_lagged     rule 7b: the previous step's outputs are delivered when this step ends
  _skip_decode_run    event skipping: a run of identical decode-only steps in one go
  _sample_and_finish  rule 7: tokens, first tokens, completions
  _write_record       one record of the run (schema: apex_fast/sim/records.py)

The KV blocks (and the prefix-cache block pool) are behind the allocator of kernels/kv_blocks.py.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from apex_fast.kernels.kv_blocks import blocks_for, kv_admit, kv_extend, kv_free, pool_lookup
from apex_fast.kernels.kv_blocks import pool_new, pool_register
from apex_fast.kernels.params import PF_C_ATTN, PF_C_CTX, PF_EAGER_FLOOR, PF_FULL_FRAC
from apex_fast.kernels.params import PF_HOST_SEQ, PF_OVERHEAD, PF_PIECEWISE_FLOOR, PI_BLOCK_SIZE
from apex_fast.kernels.params import PI_BUDGET, PI_CHUNKED, PI_GRAPH_MAX_SEQS, PI_MAX_CONC
from apex_fast.kernels.params import PI_MAX_NUM_SEQS, PI_NUM_BLOCKS, PI_OUTPUT_LAG, PI_PC_NKEYS
from apex_fast.kernels.params import PI_PIECEWISE_TOKENS, PI_WATERMARK, PI_WIN_BLOCKS
from apex_fast.sim.records import F_D0, F_DD, F_START, F_WORK, I_BLOCKS, I_COUNT, I_CTX0, I_DEC
from apex_fast.sim.records import I_PF_TOK, I_SAMP, I_SCHED

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

# waiting queue state wst = (head, size); closed-loop semaphore state sem = (head, free slots)
_HEAD = 0
_SIZE = 1


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


# --------------------------------------------------------------------------- queues


@njit(cache=True, inline="always")
def _wq_pop(waitq, wst):
    """Drop the head of the waiting queue (a ring over waitq)."""
    wst[_HEAD] = (wst[_HEAD] + 1) % waitq.shape[0]
    wst[_SIZE] -= 1


@njit(cache=True, inline="always")
def _sem_release(sem, slot_t, t):
    """A closed-loop slot is freed at time t (joins the back of the FIFO of free slots)."""
    slot_t[(sem[_HEAD] + sem[_SIZE]) % slot_t.shape[0]] = t
    sem[_SIZE] += 1


@njit(cache=True, inline="always")
def _queue_arrivals(now, next_arr, arrival, status, waitq, wst, arr_eff, max_conc, sem, slot_t):
    """Rule 1: requests arrived by `now` join the back of the waiting queue, each taking the
    slot freed longest ago under a concurrency limit. Returns the next request not queued."""
    n = arrival.shape[0]
    while next_arr < n and arrival[next_arr] <= now:
        if max_conc > 0:
            if sem[_SIZE] == 0:
                break
            arr_eff[next_arr] = max(arrival[next_arr], slot_t[sem[_HEAD]])
            sem[_HEAD] = (sem[_HEAD] + 1) % slot_t.shape[0]
            sem[_SIZE] -= 1
        waitq[(wst[_HEAD] + wst[_SIZE]) % n] = next_arr
        wst[_SIZE] += 1
        status[next_arr] = _WAITING
        next_arr += 1
    return next_arr


# --------------------------------------------------------------------------- scheduling


@njit(cache=True, inline="always")
def _sched_push(s_idx, s_pf, n_sched, r, is_prefill):
    s_idx[n_sched] = r
    s_pf[n_sched] = is_prefill
    return n_sched + 1


@njit(cache=True, inline="always")
def _admit_waiting(
    now, left, n_sched, n_pf_tok, n_samp, work, nrun, free, prompt, prefix, seq, run,
    waitq, wst, s_idx, s_pf, first_token, cached_out, pf, pi, pc, pool, sem, slot_t,
):  # fmt: skip
    """Rules 3, 4a and 5b: the head of the waiting queue is rejected (never fits), or admitted
    with the blocks of its whole target and a first chunk of min(tokens to compute, left); not
    chunked, the whole prompt must fit in `left`. Stops at the first head that does not fit."""
    status, computed, gen, target, blocks = seq
    num_blocks, bs, watermark = pi[PI_NUM_BLOCKS], pi[PI_BLOCK_SIZE], pi[PI_WATERMARK]
    chunked = pi[PI_CHUNKED] != 0
    while wst[_SIZE] > 0:
        r = waitq[wst[_HEAD]]
        tgt = prompt[r] + gen[r]
        need_b = blocks_for(prefix[r] + tgt, bs, pi[PI_WIN_BLOCKS], pf[PF_FULL_FRAC])
        if need_b > num_blocks - watermark or (not chunked and tgt > pi[PI_BUDGET]):
            _wq_pop(waitq, wst)
            status[r] = _REJECTED
            first_token[r] = -1.0
            if pi[PI_MAX_CONC] > 0:
                _sem_release(sem, slot_t, now)
            continue
        hit = 0
        shared = 0
        if pc:
            hit, shared = pool_lookup(r, tgt, bs, pool)
        cached = hit * bs
        u = tgt - cached  # tokens to compute
        c = min(u, left)
        if (
            c == 0
            or (not chunked and c < u)
            or nrun + 1 > pi[PI_MAX_NUM_SEQS]
            or free - (need_b - shared) < watermark
        ):
            break
        _wq_pop(waitq, wst)
        free = kv_admit(free, r, hit, need_b, cached + c, bs, blocks, pc, pool)
        if cached_out[r] < 0:
            cached_out[r] = cached
        target[r] = tgt
        computed[r] = cached + c
        status[r] = _RUNNING
        run[nrun] = r
        nrun += 1
        left -= c
        n_sched = _sched_push(s_idx, s_pf, n_sched, r, True)
        n_pf_tok += c
        work += c * (prefix[r] + cached + (c + 1) / 2.0)
        if cached + c == tgt:
            n_samp += 1
    return n_sched, left, n_pf_tok, n_samp, work, nrun, free


@njit(cache=True, inline="always")
def _mark_preempted(v, computed, status, pre_buf, npre, preemptions):
    """Running request `v` (its blocks already freed) queues for recompute; returns the new
    count of this step's preempted requests."""
    computed[v] = 0
    status[v] = _WAITING
    pre_buf[npre] = v
    preemptions[v] += 1
    return npre + 1


@njit(cache=True, inline="always")
def _make_room(r, deficit, run, nrun, free, seq, pre_buf, npre, preemptions, pc, pool):
    """Give running request `r` the `deficit` blocks its next token needs, preempting the most
    recently admitted running requests (recompute) while blocks are short. Returns the new
    (nrun, free, npre, r_itself_preempted); on success the blocks are allocated to `r`."""
    status, computed, _, _, blocks = seq
    while free < deficit:
        v = run[nrun - 1]
        nrun -= 1
        free = kv_free(free, v, blocks, pc, pool)
        npre = _mark_preempted(v, computed, status, pre_buf, npre, preemptions)
        if v == r:
            return nrun, free, npre, True
    if deficit > 0:
        free = kv_extend(free, r, blocks[r] + deficit, blocks, pc, pool)
    return nrun, free, npre, False


@njit(cache=True, inline="always")
def _schedule_running(
    left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre, prompt, prefix, seq,
    run, s_idx, s_pf, pre_buf, preemptions, pf, pi, pc, pool,
):  # fmt: skip
    """Rules 4c and 5a: walk the running requests from the front; one still in prefill (chunked
    only) gets a chunk of min(remaining, left), a decoding one a token and the block its KV
    needs (_make_room). The walk stops when the budget is used up or a request preempts
    itself."""
    status, computed, gen, target, blocks = seq
    bs = pi[PI_BLOCK_SIZE]
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
                pool_register(r, computed[r], bs, pool)
            n_sched = _sched_push(s_idx, s_pf, n_sched, r, True)
            n_pf_tok += c
            work += c * (prefix[r] + cb + (c + 1) / 2.0)
            if computed[r] == target[r]:
                n_samp += 1
            i += 1
            continue
        if left == 0:
            break
        L = prefix[r] + prompt[r] + gen[r]
        deficit = blocks_for(L, bs, pi[PI_WIN_BLOCKS], pf[PF_FULL_FRAC]) - blocks[r]
        nrun, free, npre, self_pre = _make_room(
            r, deficit, run, nrun, free, seq, pre_buf, npre, preemptions, pc, pool
        )
        if self_pre:
            break
        left -= 1
        n_sched = _sched_push(s_idx, s_pf, n_sched, r, False)
        n_dec += 1
        n_samp += 1
        ctx += L
        i += 1
    return n_sched, left, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre


# --------------------------------------------------------------------------- executing a step


@njit(cache=True, inline="always")
def _step_cost(n_tok, n_samp, n_sched, n_pf_tok, n_dec, work, ctx, tok_table, seq_table, pf, pi):
    """Rule 6: (duration d0, GPU-side base without the context term, host time, launch floor,
    floored). A step that does not replay a whole CUDA graph cannot end before the CPU has
    launched its kernels: it lasts at least host + floor (sim/step_time.py)."""
    host = pf[PF_OVERHEAD] + pf[PF_HOST_SEQ] * n_sched
    base = host + tok_table[n_tok] + seq_table[n_samp] + pf[PF_C_ATTN] * work
    d0 = base + pf[PF_C_CTX] * ctx
    if n_pf_tok == 0 and n_dec <= pi[PI_GRAPH_MAX_SEQS]:
        floor = 0.0  # a decode-only batch replays a captured CUDA graph
    elif n_tok <= pi[PI_PIECEWISE_TOKENS]:
        floor = pf[PF_PIECEWISE_FLOOR]
    else:
        floor = pf[PF_EAGER_FLOOR]
    floored = d0 - host < floor
    if floored:
        d0 = host + floor
    return d0, base, host, floor, floored


@njit(cache=True, inline="always")
def _deliver_lagged(
    d0, nlag, lag_idx, lag_kind, status, first_token, finish, max_conc, sem, slot_t
):
    """Rule 7b: outputs of the previous step are delivered when this step (d0) ends."""
    for t in range(nlag):
        r = lag_idx[t]
        if status[r] == _REJECTED:
            continue  # preempted, then found too long to ever fit: no output at all
        if lag_kind[t] & 1:
            first_token[r] += d0
        if lag_kind[t] & 2:
            finish[r] += d0
            if max_conc > 0:
                _sem_release(sem, slot_t, finish[r])


@njit(cache=True, inline="always")
def _run_limit(n_sched, n_dec, free, s_idx, output, gen, bs):
    """Most steps a decode-only batch can run unchanged: until its first request finishes, and
    at most bs * (free // n_dec) + 1 steps, which no sequence can take with free == 0."""
    kmax = 1 << 62
    for t in range(n_sched):
        r = s_idx[t]
        rem = output[r] - gen[r]
        if rem < kmax:
            kmax = rem
    ext_blk = bs * (free // n_dec)  # a window only slows the growth: still safe
    if kmax - 1 > ext_blk:
        kmax = ext_blk + 1
    return kmax


@njit(cache=True, inline="always")
def _skip_decode_run(now, kmax, limit_t, base, host, floor, floored, c_ctx, ctx, n_dec, gap_hist):
    """Event skipping: the steps after the first of a run of identical decode-only steps, until
    `kmax` steps, the time `limit_t` or the launch floor is outgrown. Returns (steps, now)."""
    # the gap of step k is d; consecutive d are (nearly always) in the same histogram bin, so
    # the bin is recomputed only when d leaves [d_lo, d_hi): same counts as binning every
    # step, without a log10 per step
    k = 1
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
    return k, now


@njit(cache=True, inline="always")
def _extend_for_run(k, free, n_sched, s_idx, prompt, prefix, seq, pf, pi, pc, pool):
    """Blocks of the k - 1 skipped steps of a decode run: step j writes the KV of context
    L + j. Returns the new free count."""
    gen, blocks = seq[2], seq[4]
    for t in range(n_sched):
        r = s_idx[t]
        L = prefix[r] + prompt[r] + gen[r]
        nb = blocks_for(L + k - 1, pi[PI_BLOCK_SIZE], pi[PI_WIN_BLOCKS], pf[PF_FULL_FRAC])
        free = kv_extend(free, r, nb, blocks, pc, pool)
    return free


@njit(cache=True, inline="always")
def _sample_and_finish(
    k, end_first, now, n_sched, nrun, free, nlag, s_idx, s_pf, seq, run, output, last_tok,
    first_token, finish, gap_hist, lag_idx, lag_kind, pi, pc, pool, sem, slot_t,
):  # fmt: skip
    """Rule 7: every sampling sequence gets its k tokens (the first at end_first, the last at
    now); a request reaching its output length finishes and frees its blocks. Returns the new
    (nrun, free, nlag)."""
    status, computed, gen, target, blocks = seq
    output_lag = pi[PI_OUTPUT_LAG] != 0
    max_conc = pi[PI_MAX_CONC]
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
            free = kv_free(free, r, blocks, pc, pool)
            any_done = True
            kind |= 2
            if max_conc > 0 and not output_lag:
                _sem_release(sem, slot_t, now)
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
    return nrun, free, nlag


@njit(cache=True, inline="always")
def _write_record(rec_f, rec_i, j, start, d0, dd, work, k, n_pf_tok, n_dec, n_samp, ctx, used, ns):
    rec_f[j, F_START] = start
    rec_f[j, F_D0] = d0
    rec_f[j, F_DD] = dd
    rec_f[j, F_WORK] = work
    rec_i[j, I_COUNT] = k
    rec_i[j, I_PF_TOK] = n_pf_tok
    rec_i[j, I_DEC] = n_dec
    rec_i[j, I_SAMP] = n_samp
    rec_i[j, I_CTX0] = ctx
    rec_i[j, I_BLOCKS] = used
    rec_i[j, I_SCHED] = ns


# --------------------------------------------------------------------------- the stream


@njit(cache=True)
def simulate_stream(
    arrival, prompt, output, prefix, tok_table, seq_table, pf, pi, pc_key, pc_off,
    first_token, finish, preemptions, arr_eff, cached_out, rec_f, rec_i, gap_hist,
):  # fmt: skip
    """Simulate one scheduler stream. Returns the number of records written, or -1 if `rec_f`
    is too small (the caller retries with more room).

    `pf` / `pi`: the scalar parameters (slots in kernels/params.py, filled by
    sim/stream.kernel_params). Closed loop (`max_conc` > 0): at most `max_conc` requests are in
    the system (queued or running) at once, as behind a FIFO semaphore of that many slots (vLLM
    bench `--max-concurrency`): request i enters at max(arrival[i], the time the slot it takes
    was freed), a slot being freed when a request's last token is delivered or it is rejected.
    `arr_eff` receives every request's entry time (= arrival when `max_conc` is 0).

    Prefix caching (`pc_nkeys` > 0; docs/scheduler.md "Prefix cache"): request r's first
    pc_off[r+1] - pc_off[r] prompt blocks have the keys pc_key[pc_off[r]:pc_off[r+1]] (dense,
    0..pc_nkeys-1); cached blocks are reused across the requests of this stream and evicted
    LRU from the free queue. `cached_out[r]`: prompt tokens found cached at r's first admission.

    Records: rec_f / rec_i, columns in apex_fast/sim/records.py (step j of a record lasts
    d0 + dd*j). `win_blocks` / `full_frac`: sliding-window KV (kv_blocks.blocks_for).
    """
    n = arrival.shape[0]
    m = max(n, 1)
    num_blocks = pi[PI_NUM_BLOCKS]
    budget = pi[PI_BUDGET]
    max_conc = pi[PI_MAX_CONC]
    chunked = pi[PI_CHUNKED] != 0
    pc = pi[PI_PC_NKEYS] > 0
    status = np.zeros(n, np.int64)
    gen = np.zeros(n, np.int64)
    # per request: status, prompt tokens computed, tokens generated, prefill target, KV blocks
    seq = (status, np.zeros(n, np.int64), gen, np.zeros(n, np.int64), np.zeros(n, np.int64))
    last_tok = np.zeros(n, np.float64)
    waitq = np.empty(m, np.int64)
    wst = np.zeros(2, np.int64)
    run = np.empty(m, np.int64)
    s_idx = np.empty(m, np.int64)  # this step's scheduled requests
    s_pf = np.empty(m, np.bool_)
    pre_buf = np.empty(m, np.int64)  # this step's preempted requests
    # tokens whose delivery waits for the next step (async output processing)
    lag_idx = np.empty(m, np.int64)
    lag_kind = np.empty(m, np.int64)  # 1 = first token, 2 = finish, 3 = both
    nlag = 0
    # closed loop: FIFO ring of the times free slots were released
    slot_t = np.full(max(max_conc, 1), -np.inf)
    sem = np.array([0, max_conc])
    for i in range(n):
        first_token[i] = -1.0
        finish[i] = -1.0
        preemptions[i] = 0
        arr_eff[i] = arrival[i]
        cached_out[i] = -1
    free = num_blocks
    pool = pool_new(num_blocks, pi[PI_PC_NKEYS], pc_key, pc_off, n)
    now = 0.0
    next_arr = 0
    nrun = 0
    nrec = 0
    while True:
        next_arr = _queue_arrivals(
            now, next_arr, arrival, status, waitq, wst, arr_eff, max_conc, sem, slot_t
        )
        # rule 2, idle: jump to the next arrival
        if nrun == 0 and wst[_SIZE] == 0:
            if max_conc > 0 and nlag > 0:
                # pending outputs are processed at once: their finishes free slots now
                for t in range(nlag):
                    if lag_kind[t] & 2:
                        _sem_release(sem, slot_t, finish[lag_idx[t]])
                nlag = 0
                continue
            nlag = 0  # the engine goes idle: pending outputs are processed at once
            if next_arr >= n:
                break
            now = max(now, arrival[next_arr])
            continue
        left = budget
        n_sched = n_pf_tok = n_dec = n_samp = ctx = npre = 0
        work = 0.0
        if chunked:  # running requests first, then new prefills even after a preemption
            n_sched, left, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre = (
                _schedule_running(
                    left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre,
                    prompt, prefix, seq, run, s_idx, s_pf, pre_buf, preemptions, pf, pi, pc, pool,
                )
            )  # fmt: skip
        n_sched, left, n_pf_tok, n_samp, work, nrun, free = _admit_waiting(
            now, left, n_sched, n_pf_tok, n_samp, work, nrun, free, prompt, prefix, seq, run,
            waitq, wst, s_idx, s_pf, first_token, cached_out, pf, pi, pc, pool, sem, slot_t,
        )  # fmt: skip
        if not chunked and n_sched == 0:  # not chunked: decodes only in a step without prefills
            n_sched, left, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre = (
                _schedule_running(
                    left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre,
                    prompt, prefix, seq, run, s_idx, s_pf, pre_buf, preemptions, pf, pi, pc, pool,
                )
            )  # fmt: skip
        # preempted requests rejoin the front of the waiting queue after this pass (vLLM
        # extendleft), so they are not re-admitted in the step that preempted them
        for t in range(npre):
            wst[_HEAD] = (wst[_HEAD] - 1 + n) % n
            waitq[wst[_HEAD]] = pre_buf[t]
            wst[_SIZE] += 1
        if n_sched == 0:
            # everything scheduled got preempted or rejected: no time passes, schedule again
            continue
        if nrec >= rec_f.shape[0]:
            return -1
        d0, base, host, floor, floored = _step_cost(
            budget - left, n_samp, n_sched, n_pf_tok, n_dec, work, ctx, tok_table, seq_table, pf, pi
        )  # fmt: skip
        _deliver_lagged(
            d0, nlag, lag_idx, lag_kind, status, first_token, finish, max_conc, sem, slot_t
        )
        nlag = 0
        start = now
        now = start + d0
        k = 1
        if n_pf_tok == 0 and npre == 0 and n_dec == nrun and n_dec > 0:
            kmax = _run_limit(n_sched, n_dec, free, s_idx, output, gen, pi[PI_BLOCK_SIZE])
            limit_t = np.inf  # the next arrival ends the run: it may be admitted
            if wst[_SIZE] == 0 and next_arr < n and (max_conc == 0 or sem[_SIZE] > 0):
                limit_t = arrival[next_arr]
            k, now = _skip_decode_run(
                now, kmax, limit_t, base, host, floor, floored, pf[PF_C_CTX], ctx, n_dec, gap_hist
            )  # fmt: skip
            if k > 1:
                free = _extend_for_run(
                    k, free, n_sched, s_idx, prompt, prefix, seq, pf, pi, pc, pool
                )
        dd = 0.0 if floored else pf[PF_C_CTX] * n_dec
        _write_record(
            rec_f, rec_i, nrec, start, d0, dd, work, k, n_pf_tok, n_dec, n_samp, ctx,
            num_blocks - free, n_sched,
        )  # fmt: skip
        nrec += 1
        nrun, free, nlag = _sample_and_finish(
            k, start + d0, now, n_sched, nrun, free, nlag, s_idx, s_pf, seq, run, output,
            last_tok, first_token, finish, gap_hist, lag_idx, lag_kind, pi, pc, pool, sem, slot_t,
        )  # fmt: skip
    for i in range(n):
        if cached_out[i] < 0 or status[i] == _REJECTED:
            cached_out[i] = 0
    return nrec

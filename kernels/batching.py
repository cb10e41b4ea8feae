"""Continuous-batching scheduler kernel (vLLM 0.6 semantics, docs/scheduler.md), compiled by Numba.

Pure function over arrays: inputs are typed NumPy arrays (the scalar parameters packed into two,
kernels/params.py), outputs are written into preallocated arrays. The pure-Python oracle of the
same rules is `tests/oracle.py`, written in the same phases. One pass of `_run` per step:

  queue arrivals      rule 1 (schedule.queue_arrival; closed-loop slots)
  admit waiting       rules 3, 4a, 5b (schedule.admit_head: reject or admit the queue's head)
  schedule running    rules 4c, 5a (schedule.schedule_one: prefill chunk or decode; make room /
                      preempt: schedule.preempt_for)
  step cost           rule 6 (_step_cost: duration, launch floors)
  deliver lagged      rule 7b (_deliver_one: the previous step's outputs)
  skip a decode run   event skipping (_skip_decode_run: identical decode-only steps in one go)
  write record        one record of the run (_write_record; schema: apex_fast/sim/records.py)
  sample and finish   rule 7 (_sample_one: tokens, first tokens, completions)

Decoding sequences of a large batch are advanced as one lazy set (kernels/decode.py,
docs/scheduler.md "Lazy decode set"): a step that cannot preempt or run out of budget schedules,
costs, extends and samples them without walking them.

The KV blocks (and the prefix-cache block pool) are behind the allocator of kernels/kv_blocks.py.
"""

from __future__ import annotations

import numpy as np
from apex_fast.kernels.decode import (
    heap_pop,
    lazy_dissolve,
    lazy_join,
    lazy_leave,
    lazy_run_blocks,
    lazy_step_blocks,
    lazy_step_fits,
    lazy_write_back,
)
from apex_fast.kernels.gaps import gap_bin, gap_bin_safe_hi
from apex_fast.kernels.kv_blocks import blocks_for, kv_extend, kv_free, pool_new
from apex_fast.kernels.params import (
    ADMIT_NO_EVICT,
    ADMIT_PER_CHUNK,
    ADMIT_TOKEN_RATIO,
    PF_C_ATTN,
    PF_C_CTX,
    PF_EAGER_FLOOR,
    PF_FULL_FRAC,
    PF_HOST_SEQ,
    PF_OVERHEAD,
    PF_PIECEWISE_FLOOR,
    PF_RATIO_STEPS,
    PI_ADMISSION,
    PI_BLOCK_SIZE,
    PI_BUDGET,
    PI_CHUNKED,
    PI_COPIES,
    PI_GRAPH_MAX_SEQS,
    PI_LAZY_MIN,
    PI_MAX_CONC,
    PI_MAX_NUM_SEQS,
    PI_NUM_BLOCKS,
    PI_OUTPUT_LAG,
    PI_PC_NKEYS,
    PI_PIECEWISE_TOKENS,
    PI_PREFILL_CHUNK,
    PI_SCHED_STEPS,
    PI_WIN_BLOCKS,
)
from apex_fast.kernels.schedule import (
    DONE,
    FINISHED,
    HEAD,
    REJECT,
    REJECTED,
    RUNNING,
    SIZE,
    STOP,
    admit_head,
    next_chunk,
    queue_arrival,
    retract_decode,
    schedule_one,
    sem_release,
)
from apex_fast.kernels.token_ratio import ratio_reset, ratio_run_limit
from numba import njit

from apex_fast.sim.records import (
    F_D0,
    F_DD,
    F_START,
    F_WORK,
    I_BLOCKS,
    I_COUNT,
    I_CTX0,
    I_DEC,
    I_PF_TOK,
    I_SAMP,
    I_SCHED,
)

# --------------------------------------------------------------------------- a step


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
def _run_limit(n_sched, n_dec, free, bs, s_idx, output, gen):
    """Most steps a decode-only batch can run unchanged: until its first request finishes, and
    at most bs * (free // n_dec) + 1, which no sequence can take with free == 0 (a sliding
    window only slows the growth of its blocks)."""
    kmax = 1 << 62
    for t in range(n_sched):
        kmax = min(kmax, output[s_idx[t]] - gen[s_idx[t]])
    return min(kmax, bs * (free // n_dec) + 1)


@njit(cache=True, inline="always")
def _requeue_preempted(npre, pre_buf, waitq, wst):
    """Preempted requests rejoin the front of the waiting queue, each pushed in turn."""
    for t in range(npre):
        wst[HEAD] = (wst[HEAD] - 1 + waitq.shape[0]) % waitq.shape[0]
        waitq[wst[HEAD]] = pre_buf[t]
        wst[SIZE] += 1


@njit(cache=True, inline="always")
def _extend_run(
    k, free, n_sched, s_idx, prompt, prefix, gen, blocks, pf, pi, pc, pool, copy, cfree
):
    """Blocks of the k - 1 skipped steps of a decode run (step j writes the KV of context
    L + j). Returns the new free count."""
    for t in range(n_sched):
        r = s_idx[t]
        L = prefix[r] + prompt[r] + gen[r] + k - 1
        nb = blocks_for(L, pi[PI_BLOCK_SIZE], pi[PI_WIN_BLOCKS], pf[PF_FULL_FRAC])
        free = kv_extend(free, r, nb, blocks, pc, pool, copy, cfree)
    return free


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
            b = gap_bin(d)
            d_lo = d
            d_hi = gap_bin_safe_hi(b)
        cnt += 1
        now += d
        k += 1
    gap_hist[b] += cnt * n_dec
    return k, now


@njit(cache=True, inline="always")
def _window_limit(n_sched, n_dec, free, bs, s_idx, output, gen, nsteps):
    """Multi-step: most decode windows of `nsteps` steps a batch can run unchanged: until the
    window in which its first request finishes, and while the blocks of the later windows
    (tokens nsteps .. m*nsteps - 1 of every sequence) fit `free` (the first window's blocks are
    already allocated), which (m - 1) * nsteps <= bs * (free // n_dec) guarantees."""
    m = 1 << 62
    for t in range(n_sched):
        r = s_idx[t]
        m = min(m, (output[r] - gen[r] + nsteps - 1) // nsteps)
    return min(m, 1 + bs * (free // n_dec) // nsteps)


@njit(cache=True, inline="always")
def _steps_until(now, j, j_end, base, host, floor, floored, c_ctx, ctx, n_dec):
    """Steps j .. j_end - 1 of a decode run (step j lasts base + c_ctx * (ctx + n_dec * j), at
    least host + floor while `floored`); a floored run stops at the first step whose GPU time
    outgrows the floor. Returns (the first step not taken, now)."""
    while j < j_end:
        d = base + c_ctx * (ctx + n_dec * j)
        if floored:
            if d - host >= floor:
                break
            d = host + floor
        now += d
        j += 1
    return j, now


@njit(cache=True, inline="always")
def _write_record(rec_f, rec_i, j, start, d0, dd, work, k, n_pf_tok, n_dec, n_samp, ctx, used, ns):
    """Record j: a run of k steps (fields: apex_fast/sim/records.py), stored field by field
    (rec_f[F_*, j], rec_i[I_*, j]: each field is one contiguous row). Returns j + 1."""
    rec_f[F_START, j] = start
    rec_f[F_D0, j] = d0
    rec_f[F_DD, j] = dd
    rec_f[F_WORK, j] = work
    rec_i[I_COUNT, j] = k
    rec_i[I_PF_TOK, j] = n_pf_tok
    rec_i[I_DEC, j] = n_dec
    rec_i[I_SAMP, j] = n_samp
    rec_i[I_CTX0, j] = ctx
    rec_i[I_BLOCKS, j] = used
    rec_i[I_SCHED, j] = ns
    return j + 1


@njit(cache=True, inline="always")
def _deliver_one(r, kind, d0, status, first_token, finish, max_conc, sem, slot_t):
    """Rule 7b for one pending output of the previous step (kind: 1 first token, 2 finish):
    delivered when this step (d0) ends."""
    if status[r] == REJECTED:
        return  # preempted, then found too long to ever fit: no output at all
    if kind & 1:
        first_token[r] += d0
    if kind & 2:
        finish[r] += d0
        if max_conc > 0:
            sem_release(sem, slot_t, finish[r])


@njit(cache=True, inline="always")
def _sample_one(
    r, k, end_first, now, free, status, gen, blocks, output, last_tok, first_token, finish,
    gap_hist, g_prev, b_prev, pi, pc, pool, sem, slot_t, copy, cfree,
):  # fmt: skip
    """Rule 7 for sampling sequence r: its k tokens (the first at end_first, the last at now),
    the first token of a new request, a finish (its blocks are freed). Returns (output kind:
    1 first token | 2 finish, free, g_prev, b_prev): sequences of one batch mostly share their
    gap, whose bin (b_prev of gap g_prev) is computed once."""
    kind = 0
    if gen[r] >= 1:
        g = end_first - last_tok[r]
        if g != g_prev:
            g_prev = g
            b_prev = gap_bin(g)
        gap_hist[b_prev] += 1
    else:
        first_token[r] = end_first
        kind = 1
    gen[r] += k
    last_tok[r] = now
    if gen[r] >= output[r]:
        gen[r] = output[r]  # multi-step: the window's tokens past the output are discarded
        finish[r] = now
        status[r] = FINISHED
        free = kv_free(free, r, blocks, pc, pool, copy, cfree)
        kind |= 2
        if pi[PI_MAX_CONC] > 0 and pi[PI_OUTPUT_LAG] == 0:
            sem_release(sem, slot_t, now)
    return kind, free, g_prev, b_prev


# `_run` is compiled without Numba's reference counting (`_nrt=False`): it allocates nothing and
# every array it touches is owned by simulate_stream for the whole call. With counting on, each
# inlined phase call updated an atomic reference count per array argument (LLVM's refcount
# pruning cannot pair them across the phases' branches and loops), which made the kernel 2-6x
# slower than the single-function form. The functions it calls (kernels/kv_blocks.py pool
# functions, schedule.preempt_for) count their own references as usual.
@njit(cache=True, inline="always")
def _queue_arrivals(now, next_arr, arrival, status, waitq, wst, arr_eff, max_conc, sem, slot_t):
    """Rule 1 for every arrival up to `now`; returns the next request not yet queued."""
    while next_arr < arrival.shape[0] and arrival[next_arr] <= now:
        if not queue_arrival(next_arr, arrival, status, waitq, wst, arr_eff, max_conc, sem, slot_t):
            break
        next_arr += 1
    return next_arr


@njit(cache=True, inline="always")
def _fewest_free(free, cfree, ncopy):
    """The free blocks of the fullest attention copy (`free` with one copy)."""
    f = free
    if ncopy > 1:
        for c in range(ncopy):
            f = min(f, cfree[c])
    return f


@njit(cache=True, inline="always")
def _may_join(r, now, last_tok, computed, target, prefix, prompt, gen, blocks, bs):
    """Running r may join the lazy set: it decodes, sampled a token at `now` and holds exactly
    the blocks of its context but the newest token."""
    if last_tok[r] != now or computed[r] < target[r]:
        return False
    return blocks[r] == blocks_for(prefix[r] + prompt[r] + gen[r] - 1, bs, 0, 1.0)


@njit(cache=True, inline="always")
def _compact_from(run, nrun, status, adm, a_min, ndone):
    """The `ndone` finished requests leave the running list (order kept); `run` is in
    admission order (adm), so only the requests from the earliest finished one (admitted at
    a_min) on move. Returns its new length."""
    lo = 0
    hi = nrun
    while lo < hi:
        mid = (lo + hi) >> 1
        if adm[run[mid]] < a_min:
            lo = mid + 1
        else:
            hi = mid
    if ndone == 1:  # run[lo] finished: the rest moves down one place
        # unsigned indices: no negative-index wraparound per element, so the loop compiles to
        # a vectorised move (the signed form cost a third of the saturated-decode kernel)
        for i in range(np.uintp(lo), np.uintp(nrun - 1)):
            run[i] = run[i + np.uintp(1)]
        return nrun - 1
    m = lo
    for i in range(lo, nrun):
        if status[run[i]] == RUNNING:
            run[m] = run[i]
            m += 1
    return m


@njit(cache=True, _nrt=False)
def _run(
    arrival, prompt, output, prefix, tok_table, seq_table, pf, pi, first_token, finish,
    preemptions, arr_eff, cached_out, rec_f, rec_i, gap_hist, status, computed, gen, target,
    blocks, last_tok, waitq, wst, run, s_idx, s_pf, pre_buf, lag_idx, lag_kind, sem, slot_t, pool,
    copy, cfree, adm, eag, lz_c, hk, hr, cnt, nlzc, need,
):  # fmt: skip
    """The scheduler loop: one pass per step, phases in the order of docs/scheduler.md (the
    loops over requests here, their bodies inlined phases). Returns the records written, or -1
    if rec_f is full.

    Lazy decode set (kernels/decode.py): while `lazy_on`, the running requests are the set's
    members (nlz, advanced as a whole) and the eager ones `eag` (admission order), and a step
    whose walk provably neither preempts nor runs out of budget schedules the members in one
    go; any other step first writes the members back (lazy_on off) and walks `running`."""
    n = arrival.shape[0]
    budget, max_conc, bs = pi[PI_BUDGET], pi[PI_MAX_CONC], pi[PI_BLOCK_SIZE]
    chunked = pi[PI_CHUNKED] != 0
    pc = pi[PI_PC_NKEYS] > 0
    free = pi[PI_NUM_BLOCKS]
    ncopy = pi[PI_COPIES]
    policy = pi[PI_ADMISSION]
    # the lazy decode set is built after a decode-only step of at least lazy_min running
    # sequences and written back when fewer than half as many run (below that, walking the
    # batch costs less than keeping the set; the results are the same either way)
    lazy_min = pi[PI_LAZY_MIN]
    # (not with the prefix cache, a sliding window or SGLang's admission, whose reservations
    # and retractions read every running request's tokens)
    lazy_ok = not pc and pi[PI_WIN_BLOCKS] <= 0 and lazy_min > 0 and policy != ADMIT_TOKEN_RATIO
    # multi-step scheduling (rule 9): a decode pass runs a window of nsteps steps (the set's
    # per-step block counts know no lookahead, so it is not used then)
    nsteps = pi[PI_SCHED_STEPS]
    lazy_ok = lazy_ok and nsteps == 1
    lazy_on = False
    T = nlz = sum_c = hn = neag = adm_ctr = 0
    last_sh = 0.0
    now = 0.0
    next_arr = nrun = nlag = nrec = 0
    while True:
        next_arr = _queue_arrivals(
            now, next_arr, arrival, status, waitq, wst, arr_eff, max_conc, sem, slot_t
        )
        if nrun == 0 and wst[SIZE] == 0:  # idle: pending outputs are processed at once
            if max_conc > 0 and nlag > 0:  # their finishes free slots now: queue again
                for t in range(nlag):
                    if lag_kind[t] & 2:
                        sem_release(sem, slot_t, finish[lag_idx[t]])
                nlag = 0
                continue
            nlag = 0
            ratio_reset(pf)  # SGLang's admission ratio restarts when the engine idles
            if next_arr >= n:
                break
            now = max(now, arrival[next_arr])  # jump to the next arrival
            continue
        left = budget
        n_sched = n_pf_tok = n_dec = n_samp = ctx = npre = 0
        nlz_s = 0  # lazy members scheduled in this step (all of them, or none)
        work = 0.0
        # chunked: the running requests, then admission; not chunked: admission, then the
        # running requests (decodes) only in a step without prefills
        admit_part = 1 if chunked else 0
        for part in range(2):
            if part == admit_part:  # admit waiting requests
                act = DONE
                if policy == ADMIT_PER_CHUNK and npre > 0:
                    act = STOP  # vLLM V1 admits nothing in a step that preempted
                if pi[PI_ADMISSION] == ADMIT_TOKEN_RATIO and pi[PI_PREFILL_CHUNK] > 0:
                    left, n_sched, n_pf_tok, n_samp, work, nrun, free, npre = next_chunk(
                        left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre,
                        prompt, prefix, status, computed, gen, target, blocks, run, s_idx, s_pf,
                        pre_buf, preemptions, pf, pi, pc, pool, copy, cfree,
                    )  # fmt: skip
                if (
                    nlz > 0 and policy == ADMIT_NO_EVICT and wst[SIZE] > 0
                    and nrun < pi[PI_MAX_NUM_SEQS] and left > 0
                ):  # fmt: skip
                    for h in range(hn):  # the head's reservation test reads members' blocks
                        r = hr[h]
                        blocks[r] = blocks_for(lz_c[r] + T - (1 if nlz_s == 0 else 0), bs, 0, 1.0)
                while wst[SIZE] > 0 and act != STOP:
                    act, left, n_sched, n_pf_tok, n_samp, work, nrun, free = admit_head(
                        left, n_sched, n_pf_tok, n_samp, work, nrun, free, prompt, output,
                        prefix, status, computed, gen, target, blocks, run, waitq, wst, s_idx,
                        s_pf, first_token, cached_out, pf, pi, pc, pool, copy, cfree,
                    )  # fmt: skip
                    if act == REJECT and pi[PI_MAX_CONC] > 0:
                        sem_release(sem, slot_t, now)  # the rejected request's slot
                    elif act == DONE:  # admitted: the back of running
                        adm[run[nrun - 1]] = adm_ctr
                        adm_ctr += 1
                        if lazy_on:
                            eag[neag] = run[nrun - 1]
                            neag += 1
            elif chunked or n_sched == 0:  # schedule running requests (make room / preempt)
                if lazy_on and (
                    nrun < lazy_min // 2
                    or not lazy_step_fits(
                        T, nlz, left, neag, eag, cnt, ncopy, bs, need, cfree, computed, target,
                        prefix, prompt, gen, blocks, copy, policy == ADMIT_PER_CHUNK,
                    )
                ):  # fmt: skip
                    lazy_dissolve(
                        T, hn, hr, last_sh, lz_c, cnt, nlzc, prompt, prefix, gen, blocks,
                        last_tok, bs,
                    )  # fmt: skip
                    lazy_on = False
                    nlz = sum_c = hn = neag = 0
                if lazy_on:  # no preemption, no budget stop: the eager ones, then the set
                    for i in range(neag):
                        act, left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre = (
                            schedule_one(
                                eag[i], left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun,
                                free, npre, prompt, prefix, status, computed, gen, target, blocks,
                                run, s_idx, s_pf, pre_buf, preemptions, pf, pi, pc, pool, copy,
                                cfree,
                            )
                        )  # fmt: skip
                    if nlz > 0:
                        lazy_step_blocks(T, cnt, ncopy, bs, need)
                        for c in range(ncopy):
                            cfree[c] -= need[c]
                            free -= need[c]
                        nlz_s = nlz
                        n_dec += nlz
                        n_samp += nlz
                        ctx += sum_c + nlz * T
                        left -= nlz
                    continue
                if pi[PI_ADMISSION] == ADMIT_TOKEN_RATIO:  # SGLang retracts before a decode
                    nrun, free = retract_decode(
                        run, nrun, free, status, computed, blocks, prompt, prefix, gen, output,
                        preemptions, waitq, wst, pf, pi, pc, pool, copy, cfree,
                    )  # fmt: skip
                act = DONE
                i = 0
                while i < nrun and act == DONE:
                    r = run[i]
                    act, left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre = (
                        schedule_one(
                            r, left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free,
                            npre, prompt, prefix, status, computed, gen, target, blocks, run,
                            s_idx, s_pf, pre_buf, preemptions, pf, pi, pc, pool, copy, cfree,
                        )
                    )  # fmt: skip
                    if status[r] == RUNNING:  # else r preempted itself: run[i] is the next
                        i += 1
        # preempted requests rejoin the front of the waiting queue after this pass (vLLM
        # extendleft), so they are not re-admitted in the step that preempted them
        _requeue_preempted(npre, pre_buf, waitq, wst)
        ns = n_sched + nlz_s  # sequences scheduled (s_idx holds the n_sched eager ones)
        if ns == 0:
            continue  # everything got preempted or rejected: no time passes, schedule again
        if nrec >= rec_f.shape[1]:
            return -1
        d0, base, host, floor, floored = _step_cost(
            budget - left, n_samp, ns, n_pf_tok, n_dec, work, ctx, tok_table, seq_table, pf, pi
        )  # fmt: skip
        for t in range(nlag):  # deliver the previous step's outputs
            r = lag_idx[t]
            _deliver_one(r, lag_kind[t], d0, status, first_token, finish, max_conc, sem, slot_t)
        nlag = 0
        start = now
        now = start + d0
        end_first = now  # when the first step's (multi-step: window's) tokens are delivered
        k = 1
        kt = 1  # tokens each sampling sequence gets
        if nsteps > 1 and n_pf_tok == 0:  # multi-step: a decode window (rule 9)
            m = 1  # windows in this pass: more only while nothing could change between them
            if npre == 0 and n_dec == nrun and not floored:
                m = _window_limit(n_sched, n_dec, _fewest_free(free, cfree, ncopy), bs, s_idx,
                                  output, gen, nsteps)  # fmt: skip
            limit_t = np.inf  # the window in which the next arrival comes is the last
            if wst[SIZE] == 0 and next_arr < n and (max_conc == 0 or sem[SIZE] > 0):
                limit_t = arrival[next_arr]
            k, now = _steps_until(
                now, 1, nsteps, base, host, floor, floored, pf[PF_C_CTX], ctx, n_dec
            )  # fmt: skip
            if k < nsteps:  # the launches stop binding mid-window: the rest is a new record
                if nrec + 1 >= rec_f.shape[1]:
                    return -1
                used = pi[PI_NUM_BLOCKS] - free
                nrec = _write_record(
                    rec_f, rec_i, nrec, start, d0, 0.0, work, k, 0, n_dec, n_samp, ctx, used, ns
                )  # fmt: skip
                start = now
                ctx += n_dec * k
                d0 = base + pf[PF_C_CTX] * ctx
                floored = False
                k, now = _steps_until(
                    now, 0, nsteps - k, base, host, floor, False, pf[PF_C_CTX], ctx, n_dec
                )  # fmt: skip
            end_first = now
            kt = nsteps
            b = 0
            g_lo = np.inf
            g_hi = -np.inf
            while kt < m * nsteps and now < limit_t:  # the later windows: one gap each
                w0 = now
                k, now = _steps_until(
                    now, k, k + nsteps, base, host, floor, False, pf[PF_C_CTX], ctx, n_dec
                )  # fmt: skip
                g = now - w0
                if g < g_lo or g >= g_hi:
                    b = gap_bin(g)
                    g_lo = g
                    g_hi = gap_bin_safe_hi(b)
                gap_hist[b] += n_dec
                kt += nsteps
            if kt > nsteps:
                free = _extend_run(
                    kt, free, n_sched, s_idx, prompt, prefix, gen, blocks, pf, pi, pc, pool, copy,
                    cfree,
                )  # fmt: skip
        elif n_pf_tok == 0 and npre == 0 and n_dec == nrun and n_dec > 0:  # skip a decode run
            fmin = _fewest_free(free, cfree, ncopy)  # the fullest copy bounds the run
            kmax = _run_limit(n_sched, n_dec, fmin, bs, s_idx, output, gen)
            if nlz_s > 0:
                kmax = min(kmax, hk[0] - T)  # the set's first finish
            kmax = ratio_run_limit(kmax, nrun, wst[SIZE], pf, pi)  # SGLang admission
            limit_t = np.inf  # the next arrival ends the run: it may be admitted
            if wst[SIZE] == 0 and next_arr < n and (max_conc == 0 or sem[SIZE] > 0):
                limit_t = arrival[next_arr]
            k, now = _skip_decode_run(
                now, kmax, limit_t, base, host, floor, floored, pf[PF_C_CTX], ctx, n_dec, gap_hist
            )  # fmt: skip
            kt = k
            if k > 1:
                if policy == ADMIT_TOKEN_RATIO:
                    pf[PF_RATIO_STEPS] += k - 1  # one ratio decay per decode step (SGLang)
                free = _extend_run(
                    k, free, n_sched, s_idx, prompt, prefix, gen, blocks, pf, pi, pc, pool, copy,
                    cfree,
                )  # fmt: skip
                if nlz_s > 0:
                    for c in range(ncopy):
                        m = lazy_run_blocks(T, k, c, cnt, nlzc, bs)
                        cfree[c] -= m
                        free -= m
        dd = 0.0 if floored else pf[PF_C_CTX] * n_dec
        used = pi[PI_NUM_BLOCKS] - free  # blocks after the run's allocations, before its frees
        nrec = _write_record(
            rec_f, rec_i, nrec, start, d0, dd, work, k, n_pf_tok, n_dec, n_samp, ctx, used, ns
        )
        ndone = 0  # sample and finish
        a_min = adm_ctr  # the earliest admission among the finished
        g_prev, b_prev = np.nan, 0
        for t in range(n_sched):
            r = s_idx[t]
            if s_pf[t] and computed[r] < target[r]:
                continue  # a prefill chunk that does not finish the prompt samples nothing
            kind, free, g_prev, b_prev = _sample_one(
                r, kt, end_first, now, free, status, gen, blocks, output, last_tok, first_token,
                finish, gap_hist, g_prev, b_prev, pi, pc, pool, sem, slot_t, copy, cfree,
            )  # fmt: skip
            if kind >= 2:
                ndone += 1
                a_min = min(a_min, adm[r])
            if pi[PI_OUTPUT_LAG] != 0 and kind:
                lag_idx[nlag] = r
                lag_kind[nlag] = kind
                nlag += 1
        if nlz_s > 0:  # the set: its finishing members are written back and sampled alone
            while hn > 0 and hk[0] <= T + k:
                r = hr[0]
                hn = heap_pop(hk, hr, hn)
                nlz, sum_c = lazy_leave(r, nlz, sum_c, lz_c, cnt, nlzc, copy, bs)
                L0 = lz_c[r] + T
                lazy_write_back(
                    r, L0, blocks_for(L0 + k - 1, bs, 0, 1.0), last_sh, prompt, prefix, gen,
                    blocks, last_tok,
                )  # fmt: skip
                kind, free, g_prev, b_prev = _sample_one(
                    r, k, start + d0, now, free, status, gen, blocks, output, last_tok,
                    first_token, finish, gap_hist, g_prev, b_prev, pi, pc, pool, sem, slot_t,
                    copy, cfree,
                )  # fmt: skip
                ndone += 1
                a_min = min(a_min, adm[r])
                if pi[PI_OUTPUT_LAG] != 0:
                    lag_idx[nlag] = r
                    lag_kind[nlag] = kind
                    nlag += 1
            if nlz > 0:  # the others' first gap: all last sampled at last_sh
                g = start + d0 - last_sh
                if g != g_prev:
                    b_prev = gap_bin(g)
                gap_hist[b_prev] += nlz
            T += k
            last_sh = now
        if ndone > 0:  # finished requests leave the running list
            nrun = _compact_from(run, nrun, status, adm, a_min, ndone)
        if lazy_on:  # eager decoders that sampled with the set join it
            m = 0
            for i in range(neag):
                r = eag[i]
                if status[r] != RUNNING:
                    continue
                if (nlz == 0 or nlz_s > 0) and _may_join(
                    r, now, last_tok, computed, target, prefix, prompt, gen, blocks, bs
                ):
                    last_sh = now
                    nlz, sum_c, hn = lazy_join(
                        r, prefix[r] + prompt[r] + gen[r], T, nlz, sum_c, hn, lz_c, hk, hr, cnt,
                        nlzc, copy, output, gen, bs,
                    )  # fmt: skip
                else:
                    eag[m] = r
                    m += 1
            neag = m
        elif lazy_ok and lazy_min <= nrun <= budget and n_pf_tok == 0:
            if _fewest_free(free, cfree, ncopy) >= 2 * nrun:  # room for two full steps: build
                lazy_on = True
                last_sh = now
                for i in range(nrun):
                    r = run[i]
                    if _may_join(
                        r, now, last_tok, computed, target, prefix, prompt, gen, blocks, bs
                    ):
                        nlz, sum_c, hn = lazy_join(
                            r, prefix[r] + prompt[r] + gen[r], T, nlz, sum_c, hn, lz_c, hk, hr,
                            cnt, nlzc, copy, output, gen, bs,
                        )  # fmt: skip
                    else:
                        eag[neag] = r
                        neag += 1
    return nrec


@njit(cache=True)
def simulate_stream(
    arrival, prompt, output, prefix, tok_table, seq_table, pf, pi, pc_key, pc_off, copy,
    first_token, finish, preemptions, arr_eff, cached_out, rec_f, rec_i, gap_hist,
):  # fmt: skip
    """Simulate one scheduler stream. Returns the number of records written, or -1 if `rec_f`
    is too small (the caller retries with more room).

    `pf` / `pi`: the scalar parameters (slots in kernels/params.py, filled by
    sim/stream.kernel_params). Closed loop (max_conc > 0): at most max_conc requests are in
    the system (queued or running) at once, as behind a FIFO semaphore of that many slots (vLLM
    bench `--max-concurrency`): request i enters at max(arrival[i], the time the slot it takes
    was freed), a slot being freed when a request's last token is delivered or it is rejected.
    `arr_eff` receives every request's entry time (= arrival when max_conc is 0).

    Prefix caching (pc_nkeys > 0; docs/scheduler.md "Prefix cache"): request r's first
    pc_off[r+1] - pc_off[r] prompt blocks have the keys pc_key[pc_off[r]:pc_off[r+1]] (dense,
    0..pc_nkeys-1); cached blocks are reused across the requests of this stream and evicted
    LRU from the free queue. `cached_out[r]`: prompt tokens found cached at r's first admission.

    KV per attention copy (pi[PI_COPIES] > 1, docs/memory.md): request r is served by copy
    copy[r] (0..copies-1) and takes its blocks from that copy's pool of num_blocks / copies;
    admission, the watermark and preemption look at that copy only. One copy: copy is all 0.

    Records: rec_f / rec_i, shape (fields, room): record j is column j, its fields the rows named
    in apex_fast/sim/records.py (step j of a record lasts d0 + dd*j). Sliding-window KV:
    kv_blocks.blocks_for.
    """
    n = arrival.shape[0]
    m = max(n, 1)
    max_conc = pi[PI_MAX_CONC]
    for i in range(n):
        first_token[i] = -1.0
        finish[i] = -1.0
        preemptions[i] = 0
        arr_eff[i] = arrival[i]
        cached_out[i] = -1
    status = np.zeros(n, np.int64)
    nrec = _run(
        arrival, prompt, output, prefix, tok_table, seq_table, pf.copy(), pi, first_token, finish,
        preemptions, arr_eff, cached_out, rec_f, rec_i, gap_hist, status,
        np.zeros(n, np.int64),  # computed: prompt tokens whose KV exists
        np.zeros(n, np.int64),  # gen: tokens generated
        np.zeros(n, np.int64),  # target: tokens to prefill (prompt + gen at admission)
        np.zeros(n, np.int64),  # blocks: KV blocks held
        np.zeros(n, np.float64),  # last_tok: time of the last token
        np.empty(m, np.int64),  # waitq: the waiting queue, a ring
        np.zeros(2, np.int64),  # wst: its (head, size)
        np.empty(m, np.int64),  # run: the running requests in admission order
        np.empty(m, np.int64),  # s_idx: this step's scheduled requests
        np.empty(m, np.bool_),  # s_pf: ... and whether each is a prefill chunk
        np.empty(m, np.int64),  # pre_buf: this step's preempted requests
        np.empty(m, np.int64),  # lag_idx: outputs delivered when the next step ends
        np.empty(m, np.int64),  # lag_kind: 1 = first token, 2 = finish, 3 = both
        np.array([0, max_conc]),  # sem: (head, free slots) of the closed-loop semaphore
        np.full(max(max_conc, 1), -np.inf),  # slot_t: times the free slots were released
        pool_new(pi[PI_NUM_BLOCKS], pi[PI_PC_NKEYS], pc_key, pc_off, n),
        copy,
        np.full(pi[PI_COPIES], pi[PI_NUM_BLOCKS] // pi[PI_COPIES], np.int64),  # cfree per copy
        np.zeros(m, np.int64),  # adm: admission number (running is in this order)
        np.empty(m, np.int64),  # eag: running requests outside the lazy set
        np.zeros(m, np.int64),  # lz_c: a lazy member's context minus the set's counter
        np.empty(m, np.int64),  # hk: the members' finish counters (min-heap)
        np.empty(m, np.int64),  # hr: ... and the members
        np.zeros((pi[PI_COPIES], pi[PI_BLOCK_SIZE]), np.int64),  # cnt: members by copy, slot
        np.zeros(pi[PI_COPIES], np.int64),  # nlzc: members per copy
        np.empty(pi[PI_COPIES], np.int64),  # need: new blocks per copy in a step
    )  # fmt: skip
    for i in range(n):
        if cached_out[i] < 0 or status[i] == REJECTED:
            cached_out[i] = 0
    return nrec

"""Scheduling phases of the batching kernel (docs/scheduler.md rules 1 and 3 to 5), Numba.

Each function here is the body of one scheduling loop of `kernels/batching._run` for one
request: the loops themselves stay in `_run`, which is compiled without reference counting
(batching.py says why), so these inlined bodies cost nothing beyond their arithmetic.

The per-step tallies of a scheduling pass travel as scalars: `left` (token budget left),
`n_sched` (scheduled sequences), `n_pf_tok` (prefill tokens), `n_dec` (decodes), `n_samp`
(sequences that sample a token), `ctx` (context read by the decodes), `work` (causal pairs).
"""

from __future__ import annotations

from apex_fast.kernels.kv_blocks import (
    blocks_for,
    kv_admit,
    kv_extend,
    kv_free,
    pool_lookup,
    pool_register,
)
from apex_fast.kernels.params import (
    ADMIT_NO_EVICT,
    ADMIT_PER_CHUNK,
    ADMIT_TOKEN_RATIO,
    CLIP_MAX_NEW_TOKENS,
    PF_BLOCKED,
    PF_FULL_FRAC,
    PF_RATIO0,
    PF_RATIO_STEPS,
    PI_ADMISSION,
    PI_BLOCK_SIZE,
    PI_BUDGET,
    PI_CHUNKED,
    PI_COPIES,
    PI_MAX_NUM_SEQS,
    PI_NUM_BLOCKS,
    PI_PREFILL_CHUNK,
    PI_SCHED_STEPS,
    PI_WATERMARK,
    PI_WIN_BLOCKS,
    RETRACT_DECODE_STEPS,
)
from apex_fast.kernels.token_ratio import admission_blocked, ratio_admits
from numba import njit

# status codes
WAITING = 1
RUNNING = 2
FINISHED = 3
REJECTED = 4

# waiting queue state wst = (head, size); closed-loop semaphore state sem = (head, free slots)
HEAD = 0
SIZE = 1

# what a scheduling body did
DONE = 0  # scheduled: the loop goes on
STOP = 1  # the loop stops
REJECT = 2  # admit_head rejected the head (the caller frees its closed-loop slot): go on


@njit(cache=True, inline="always")
def sem_release(sem, slot_t, t):
    """A closed-loop slot is freed at time t (joins the back of the FIFO of free slots)."""
    slot_t[(sem[HEAD] + sem[SIZE]) % slot_t.shape[0]] = t
    sem[SIZE] += 1


@njit(cache=True, inline="always")
def queue_arrival(i, arrival, status, waitq, wst, arr_eff, max_conc, sem, slot_t):
    """Rule 1 for request i (arrived): it joins the back of the waiting queue, taking the slot
    freed longest ago under a concurrency limit. False if no slot is free."""
    if max_conc > 0:
        if sem[SIZE] == 0:
            return False
        arr_eff[i] = max(arrival[i], slot_t[sem[HEAD]])
        sem[HEAD] = (sem[HEAD] + 1) % slot_t.shape[0]
        sem[SIZE] -= 1
    waitq[(wst[HEAD] + wst[SIZE]) % waitq.shape[0]] = i
    wst[SIZE] += 1
    status[i] = WAITING
    return True


@njit(cache=True, inline="always")
def sched_push(s_idx, s_pf, n_sched, r, is_prefill):
    s_idx[n_sched] = r
    s_pf[n_sched] = is_prefill
    return n_sched + 1


@njit(cache=True, inline="always")
def reserved_to_completion(run, nrun, prefix, prompt, output, blocks, pf, pi, copy, r):
    """ADMIT_NO_EVICT: blocks the running requests of r's attention copy still need to reach
    their maximum output, sum of blocks_for(prefix + prompt + output) - blocks held
    (TensorRT-LLM KVCacheManager::getRemainingBlocksToCompletion, summed by
    GuaranteedNoEvictScheduler)."""
    bs, win, frac = pi[PI_BLOCK_SIZE], pi[PI_WIN_BLOCKS], pf[PF_FULL_FRAC]
    res = 0
    for t in range(nrun):
        v = run[t]
        if copy[v] != copy[r]:
            continue
        res += max(blocks_for(prefix[v] + prompt[v] + output[v], bs, win, frac) - blocks[v], 0)
    return res


@njit(cache=True, inline="always")
def admit_head(
    left, n_sched, n_pf_tok, n_samp, work, nrun, free, prompt, output, prefix, status, computed,
    gen, target, blocks, run, waitq, wst, s_idx, s_pf, first_token, cached_out, pf, pi, pc, pool,
    copy, cfree,
):  # fmt: skip
    """Rules 3, 4a and 5b for the head of the waiting queue: rejected if it can never fit;
    else admitted with a first chunk of min(tokens to compute, left) (not chunked: the whole
    prompt must fit in `left`), or STOP if it does not fit now. Blocks and watermark are those
    of the head's attention copy (docs/memory.md). The blocks it needs and gets follow the
    admission policy (docs/scheduler.md "Admission policies"): ADMIT_WHOLE_PROMPT allocates its
    whole target above the watermark; ADMIT_NO_EVICT the same, admitted only if its prompt + max
    output fits the free blocks less the running requests' reservations; ADMIT_PER_CHUNK only
    its first chunk's blocks (and the caller admits nothing in a step that preempted);
    ADMIT_TOKEN_RATIO (SGLang, kernels/token_ratio.py) its first chunk's blocks, admitted only
    if its whole prompt + clipped output fits the free tokens less the running requests'
    reservations, a prompt split at `prefill_chunk` prefill tokens per step. At most
    30 arguments: CPython passes more as *args, which Numba cannot inline. Returns (DONE | STOP
    | REJECT, left, n_sched, n_pf_tok, n_samp, work, nrun, free)."""
    num_blocks, bs, watermark = pi[PI_NUM_BLOCKS], pi[PI_BLOCK_SIZE], pi[PI_WATERMARK]
    num_blocks //= pi[PI_COPIES]  # one copy's blocks
    win, frac = pi[PI_WIN_BLOCKS], pf[PF_FULL_FRAC]
    policy = pi[PI_ADMISSION]
    chunked = pi[PI_CHUNKED] != 0
    split = policy == ADMIT_TOKEN_RATIO and pi[PI_PREFILL_CHUNK] > 0  # SGLang chunks prompts
    if policy == ADMIT_TOKEN_RATIO and admission_blocked(nrun, n_pf_tok, pf):
        return STOP, left, n_sched, n_pf_tok, n_samp, work, nrun, free
    r = waitq[wst[HEAD]]
    tgt = prompt[r] + gen[r]
    need_b = blocks_for(prefix[r] + tgt, bs, win, frac)
    full_b = need_b  # blocks it can ever hold (the rejection test)
    if policy == ADMIT_NO_EVICT:
        full_b = blocks_for(prefix[r] + prompt[r] + output[r], bs, win, frac)
    never = full_b > num_blocks - watermark
    if policy == ADMIT_TOKEN_RATIO:  # admitted only if it fits with nothing else running
        never = need_b * bs + min(output[r], CLIP_MAX_NEW_TOKENS) >= (num_blocks - watermark) * bs
    if never or (not chunked and not split and tgt > pi[PI_BUDGET]):
        wst[HEAD] = (wst[HEAD] + 1) % waitq.shape[0]
        wst[SIZE] -= 1
        status[r] = REJECTED
        first_token[r] = -1.0
        return REJECT, left, n_sched, n_pf_tok, n_samp, work, nrun, free
    hit = 0
    shared = 0
    if pc:
        hit, shared = pool_lookup(r, tgt, bs, pool)
    cached = hit * bs
    u = tgt - cached  # tokens to compute
    c = min(u, left)
    if split:  # what is left of the step's prefill tokens
        c = min(u, pi[PI_PREFILL_CHUNK] - n_pf_tok)
    if c <= 0 or (not chunked and not split and c < u) or nrun + 1 > pi[PI_MAX_NUM_SEQS]:
        return STOP, left, n_sched, n_pf_tok, n_samp, work, nrun, free
    cf = cfree[copy[r]]  # the free blocks of r's attention copy
    if policy == ADMIT_TOKEN_RATIO:
        need_b = blocks_for(prefix[r] + cached + c, bs, win, frac)  # the first chunk's blocks
        if cf - (need_b - shared) < watermark or not ratio_admits(
            r, tgt, hit, shared, cf, run, nrun, n_sched, s_idx, s_pf, prefix, output, gen,
            computed, target, copy, pf, pi,
        ):  # fmt: skip
            if nrun > n_sched:  # SGLang batch_is_full, on a running batch that decodes:
                pf[PF_BLOCKED] = nrun  # no prefill tried until a running request leaves
            return STOP, left, n_sched, n_pf_tok, n_samp, work, nrun, free
    elif policy == ADMIT_PER_CHUNK:
        need_b = blocks_for(prefix[r] + cached + c, bs, win, frac)
        if cf - (need_b - shared) < watermark:
            return STOP, left, n_sched, n_pf_tok, n_samp, work, nrun, free
    elif policy == ADMIT_NO_EVICT:
        res = reserved_to_completion(run, nrun, prefix, prompt, output, blocks, pf, pi, copy, r)
        if cf - res - (full_b - shared) < watermark:
            return STOP, left, n_sched, n_pf_tok, n_samp, work, nrun, free
    elif cf - (need_b - shared) < watermark:
        return STOP, left, n_sched, n_pf_tok, n_samp, work, nrun, free
    wst[HEAD] = (wst[HEAD] + 1) % waitq.shape[0]
    wst[SIZE] -= 1
    free = kv_admit(free, r, hit, need_b, cached + c, bs, blocks, pc, pool, copy, cfree)
    if cached_out[r] < 0:
        cached_out[r] = cached
    target[r] = tgt
    computed[r] = cached + c
    status[r] = RUNNING
    run[nrun] = r
    work += c * (prefix[r] + cached + (c + 1) / 2.0)
    if cached + c == tgt:
        n_samp += 1
    n_sched = sched_push(s_idx, s_pf, n_sched, r, True)
    return DONE, left - c, n_sched, n_pf_tok + c, n_samp, work, nrun + 1, free


@njit(cache=True)
def preempt_for(
    r, deficit, run, nrun, free, status, computed, blocks, pre_buf, npre, pre, pc, pool, copy,
    cfree,
):  # fmt: skip
    """Rule 4c when blocks are short: preempt the most recently admitted running requests of
    r's attention copy (recompute) until `deficit` blocks are free in that copy or `r` itself
    is preempted. A plain call, made only under KV pressure. Returns (nrun, free, npre,
    r_itself_preempted)."""
    c = copy[r]
    while cfree[c] < deficit:
        j = nrun - 1  # the copy's last running request (r at the latest)
        while copy[run[j]] != c:
            j -= 1
        v = run[j]
        for t in range(j, nrun - 1):
            run[t] = run[t + 1]
        nrun -= 1
        free = kv_free(free, v, blocks, pc, pool, copy, cfree)
        computed[v] = 0
        status[v] = WAITING
        pre_buf[npre] = v
        npre += 1
        pre[v] += 1
        if v == r:
            return nrun, free, npre, True
    return nrun, free, npre, False


@njit(cache=True, inline="always")
def schedule_one(
    r, left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre, prompt, prefix,
    status, computed, gen, target, blocks, run, s_idx, s_pf, pre_buf, preemptions, pf, pi, pc,
    pool, copy, cfree,
):  # fmt: skip
    """Rules 4c and 5a for running request r: still in prefill (chunked only), a chunk of
    min(remaining, left); decoding, one token and the blocks its KV needs (multi-step: and the
    KV of the window's lookahead tokens, rule 9), preempting the newest requests of r's copy
    while its blocks are short (make room). STOP when the budget is used
    up; r may preempt itself (status WAITING; with one copy it was the last running).
    Returns (DONE | STOP, left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre)."""
    bs = pi[PI_BLOCK_SIZE]
    if computed[r] < target[r]:
        c = min(target[r] - computed[r], left)
        if c == 0:
            return STOP, left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre
        if pi[PI_ADMISSION] == ADMIT_PER_CHUNK or pi[PI_ADMISSION] == ADMIT_TOKEN_RATIO:
            nb = blocks_for(prefix[r] + computed[r] + c, bs, pi[PI_WIN_BLOCKS], pf[PF_FULL_FRAC])
            if nb > blocks[r]:
                deficit = nb - blocks[r]
                if cfree[copy[r]] < deficit:
                    nrun, free, npre, self_pre = preempt_for(
                        r, deficit, run, nrun, free, status, computed, blocks, pre_buf, npre,
                        preemptions, pc, pool, copy, cfree,
                    )  # fmt: skip
                    if self_pre:  # as below: the loop goes on with the next running request
                        return (
                            DONE, left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free,
                            npre,
                        )  # fmt: skip
                free = kv_extend(free, r, nb, blocks, pc, pool, copy, cfree)
        cb = computed[r]
        computed[r] += c
        if pc:
            pool_register(r, computed[r], bs, pool)
        n_sched = sched_push(s_idx, s_pf, n_sched, r, True)
        work += c * (prefix[r] + cb + (c + 1) / 2.0)
        if computed[r] == target[r]:
            n_samp += 1
        return DONE, left - c, n_sched, n_pf_tok + c, n_dec, n_samp, ctx, work, nrun, free, npre
    if left == 0:
        return STOP, left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre
    L = prefix[r] + prompt[r] + gen[r]
    # the KV of its newest token and, multi-step, of the window's N - 1 lookahead tokens
    look = pi[PI_SCHED_STEPS] - 1
    deficit = blocks_for(L + look, bs, pi[PI_WIN_BLOCKS], pf[PF_FULL_FRAC]) - blocks[r]
    if cfree[copy[r]] < deficit:  # make room (in r's attention copy)
        nrun, free, npre, self_pre = preempt_for(
            r, deficit, run, nrun, free, status, computed, blocks, pre_buf, npre, preemptions,
            pc, pool, copy, cfree,
        )  # fmt: skip
        if self_pre:  # the loop goes on with the next running request (another copy's)
            return DONE, left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre
    if deficit > 0:
        free = kv_extend(free, r, blocks[r] + deficit, blocks, pc, pool, copy, cfree)
    n_sched = sched_push(s_idx, s_pf, n_sched, r, False)
    return DONE, left - 1, n_sched, n_pf_tok, n_dec + 1, n_samp + 1, ctx + L, work, nrun, free, npre


@njit(cache=True)
def next_chunk(
    left, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre, prompt, prefix,
    status, computed, gen, target, blocks, run, s_idx, s_pf, pre_buf, preemptions, pf, pi, pc,
    pool, copy, cfree,
):  # fmt: skip
    """SCH `get_new_batch_prefill` / SP `add_chunked_req`: the running request whose prompt is
    split (at most one) gets its next chunk first, at most `prefill_chunk` tokens. Returns
    (left, n_sched, n_pf_tok, n_samp, work, nrun, free, npre)."""
    chunk = pi[PI_PREFILL_CHUNK]
    for i in range(nrun):
        r = run[i]
        if computed[r] < target[r]:
            _, rest, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre = schedule_one(
                r, chunk, n_sched, n_pf_tok, n_dec, n_samp, ctx, work, nrun, free, npre,
                prompt, prefix, status, computed, gen, target, blocks, run, s_idx, s_pf,
                pre_buf, preemptions, pf, pi, pc, pool, copy, cfree,
            )  # fmt: skip
            left -= chunk - rest
            break
    return left, n_sched, n_pf_tok, n_samp, work, nrun, free, npre


@njit(cache=True)
def retract_decode(
    run, nrun, free, status, computed, blocks, prompt, prefix, gen, output, preemptions,
    waitq, wst, pf, pi, pc, pool, copy, cfree,
):  # fmt: skip
    """SCH `update_running_batch` before a decode step: retract (SB `retract_decode`) in every
    attention copy whose free blocks cannot hold its requests' next tokens, then set the ratio
    from the requests left; without a retraction the ratio decays one step. Returns (nrun,
    free)."""
    if nrun == 0:
        return nrun, free
    bs, win, frac = pi[PI_BLOCK_SIZE], pi[PI_WIN_BLOCKS], pf[PF_FULL_FRAC]
    retracted = False
    for c in range(pi[PI_COPIES]):
        need = 0
        m = 0
        for t in range(nrun):
            v = run[t]
            if copy[v] == c:
                m += 1
                need += max(
                    blocks_for(prefix[v] + prompt[v] + gen[v], bs, win, frac) - blocks[v], 0
                )
        if cfree[c] >= need:
            continue
        first = True
        while first or cfree[c] * bs < RETRACT_DECODE_STEPS * m:
            if m <= 1:
                break  # SB: the last request is never retracted
            first = False
            j = -1  # fewest output tokens; ties: longest prompt, then latest admitted
            for t in range(nrun):
                v = run[t]
                if copy[v] != c:
                    continue
                if (
                    j < 0
                    or gen[v] < gen[run[j]]
                    or (gen[v] == gen[run[j]] and prompt[v] >= prompt[run[j]])
                ):
                    j = t
            v = run[j]
            for t in range(j, nrun - 1):
                run[t] = run[t + 1]
            nrun -= 1
            m -= 1
            free = kv_free(free, v, blocks, pc, pool, copy, cfree)
            computed[v] = 0
            status[v] = WAITING
            preemptions[v] += 1
            waitq[(wst[HEAD] + wst[SIZE]) % waitq.shape[0]] = v  # SCH: back of the queue
            wst[SIZE] += 1
            retracted = True
    if retracted:
        dec = 0
        mx = 0
        for t in range(nrun):
            dec += gen[run[t]]
            mx += output[run[t]]
        pf[PF_RATIO0] = min(1.0, (dec + RETRACT_DECODE_STEPS * nrun) / mx)
        pf[PF_RATIO_STEPS] = 0.0
    else:
        pf[PF_RATIO_STEPS] += 1.0
    return nrun, free

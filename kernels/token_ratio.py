"""SGLang's admission rule in the batching kernel: policy ADMIT_TOKEN_RATIO (Numba).

The rule (docs/scheduler.md "Admission policies", sglang 0.4.6.post5):
  SP  = python/sglang/srt/managers/schedule_policy.py   `PrefillAdder`, `add_one_req`
  SCH = python/sglang/srt/managers/scheduler.py         `get_new_batch_prefill`,
                                                         `update_running_batch`, the idle reset
  SB  = python/sglang/srt/managers/schedule_batch.py    `check_decode_mem`, `retract_decode`
Constants are in kernels/params.py (INIT_NEW_TOKEN_RATIO ... RETRACT_DECODE_STEPS).

* Admission (SP `add_one_req`, SCH `get_new_batch_prefill`): the head r of the waiting queue is
  admitted only if its tokens to compute plus min(output, CLIP) are fewer than the free KV
  tokens (free blocks x block size) less, for every decoding request v of its copy,
  min(output - gen, CLIP) x new_token_ratio, less min(output, CLIP) for every request whose
  prefill completes in this step. A chunked prompt (`prefill_chunk` > 0) is admitted with a
  first chunk of what is left of the step's prefill tokens, its KV allocated per chunk; its
  next chunk leads the next step (`next_chunk`), before any new admission.
* Blocked admission (SCH `batch_is_full`): once admission fails for want of tokens, no new
  prefill is tried until a running request leaves (finishes or is retracted).
* new_token_ratio (SCH): starts at INIT, decays by NEW_TOKEN_RATIO_DECAY per decode step to
  MIN, is reset to INIT when the engine is idle; kept as (value at the last reset, decode steps
  since) so that a run of k identical decode steps advances it in one go.
* Retraction (SB `check_decode_mem`, `retract_decode`): before a decode step, if the free
  blocks of a copy cannot hold its running requests' next tokens, the requests with the fewest
  output tokens (ties: the longest prompt, then the latest admitted) are retracted (KV freed,
  recomputed later, appended to the back of the waiting queue) until free tokens >=
  RETRACT_DECODE_STEPS x remaining requests, at least one, never the last; the ratio then
  becomes min(1, (sum gen + RETRACT_DECODE_STEPS x n) / sum output) over the running requests.

The state (PF_RATIO0, PF_RATIO_STEPS, PF_BLOCKED) lives in the kernel's own copy of `pf`. The
rule's tests are here; the two phases that move requests (`next_chunk`, `retract_decode`) are in
kernels/schedule.py beside the phases they reuse.
"""

from __future__ import annotations

import numpy as np
from apex_fast.kernels.kv_blocks import blocks_for
from apex_fast.kernels.params import (
    ADMIT_TOKEN_RATIO,
    CLIP_MAX_NEW_TOKENS,
    INIT_NEW_TOKEN_RATIO,
    MIN_NEW_TOKEN_RATIO,
    NEW_TOKEN_RATIO_DECAY,
    PF_BLOCKED,
    PF_FULL_FRAC,
    PF_RATIO0,
    PF_RATIO_STEPS,
    PI_ADMISSION,
    PI_BLOCK_SIZE,
    PI_MAX_NUM_SEQS,
    PI_WIN_BLOCKS,
)
from numba import njit


@njit(cache=True, inline="always")
def new_token_ratio(pf):
    """SGLang's new_token_ratio now: the value at its last reset, less one decay per decode step
    since, not below the floor (the same as decaying step by step)."""
    k = pf[PF_RATIO_STEPS]
    if k == 0:
        return pf[PF_RATIO0]
    return max(pf[PF_RATIO0] - k * NEW_TOKEN_RATIO_DECAY, MIN_NEW_TOKEN_RATIO)


@njit(cache=True, inline="always")
def ratio_reset(pf):
    """The engine went idle (SCH: no batch to run): the ratio restarts at its initial value."""
    pf[PF_RATIO0] = INIT_NEW_TOKEN_RATIO
    pf[PF_RATIO_STEPS] = 0.0


@njit(cache=True)
def ratio_admits(
    r, tgt, hit, shared, cf, run, nrun, n_sched, s_idx, s_pf, prefix, output, gen, computed,
    target, copy, pf, pi,
):  # fmt: skip
    """SP `add_one_req`: does head r (target tgt, `hit` cached blocks of which `shared` are
    held by running requests) fit the tokens left after the reservations? `cf`: free blocks of
    r's copy. Sums are of integers, multiplied by the ratio once."""
    bs = pi[PI_BLOCK_SIZE]
    s_dec = 0  # remaining outputs of the decoding requests, each clipped
    for t in range(nrun):
        v = run[t]
        if copy[v] == copy[r] and computed[v] >= target[v]:
            s_dec += min(output[v] - gen[v], CLIP_MAX_NEW_TOKENS)
    s_new = 0  # outputs of the requests whose prefill completes in this step, each clipped
    for t in range(n_sched):
        v = s_idx[t]
        if s_pf[t] and copy[v] == copy[r] and computed[v] >= target[v]:
            s_dec -= min(output[v] - gen[v], CLIP_MAX_NEW_TOKENS)
            s_new += min(output[v], CLIP_MAX_NEW_TOKENS)
    ext = (blocks_for(prefix[r] + tgt, bs, pi[PI_WIN_BLOCKS], pf[PF_FULL_FRAC]) - hit) * bs
    avail = (cf - (hit - shared)) * bs  # hits on free cached blocks are locked first
    rest = avail - ext - min(output[r], CLIP_MAX_NEW_TOKENS) - s_new
    return rest > new_token_ratio(pf) * s_dec


@njit(cache=True, inline="always")
def admission_blocked(nrun, n_pf_tok, pf):
    """SCH `get_new_batch_prefill` returns at once while `batch_is_full` (set when admission
    ran out of tokens, cleared when a running request leaves) unless a chunked prompt goes on
    (n_pf_tok > 0). Unblocks (and clears the mark) once fewer requests run than then."""
    if n_pf_tok > 0:
        return False
    if nrun >= pf[PF_BLOCKED]:
        return True
    pf[PF_BLOCKED] = np.inf
    return False


@njit(cache=True, inline="always")
def ratio_run_limit(kmax, nrun, waiting, pf, pi):
    """Steps a decode-only run may skip under ADMIT_TOKEN_RATIO: SGLang tries a prefill before
    every decode step, so a run is cut to one step while requests wait that admission may take
    (not blocked, below max running: only after a retraction requeued some)."""
    if pi[PI_ADMISSION] != ADMIT_TOKEN_RATIO or waiting == 0:
        return kmax
    if nrun >= pf[PF_BLOCKED] or nrun >= pi[PI_MAX_NUM_SEQS]:
        return kmax
    return 1

"""The lazy decode set of the batching kernel (docs/scheduler.md, "Lazy decode set"), Numba.

A long stretch of decode steps with a full batch walked every running sequence once per record
(its context, its next block, its finish, its gap), although nearly all of them only decode. The
kernel instead keeps most decoding sequences in a *lazy set* that is advanced as a whole:

  T        decode steps the lazy set has taken (a global counter); a member r's context is
           lz_c[r] + T (lz_c[r] = its context minus T when it joined), its generated tokens
           lz_c[r] + T - prefix[r] - prompt[r], its blocks B(context - 1)
  sum_c    sum of lz_c over the members: the set's decode context is sum_c + nlz * T
  cnt      cnt[c, (lz_c - 1) mod bs]: members of attention copy c by position in their last KV
           block; at counter T the members with (lz_c - 1 + T) mod bs == 0 need a new block
  heap     min-heap of (finish counter, member): the member's last token is sampled when T
           reaches it (a run stops there)
  last_sh  the time of the members' last token (they all sample in the same steps)

Every member decodes in every step of the set, so the gaps of its tokens are those of the set.
A member leaves only by finishing (it is then written back to the per-request arrays and
sampled as before) or when the whole set is dissolved (written back: a step that may preempt or
run out of budget takes the per-step path). Without a sliding window and without the prefix
cache only (kernels/batching.py checks). Every function here is inlined into `_run`.
"""

from __future__ import annotations

from apex_fast.kernels.kv_blocks import blocks_for
from numba import njit


@njit(cache=True, inline="always")
def heap_push(hk, hr, hn, key, r):
    """Push (key, r) on the min-heap (hk, hr) of hn entries; returns hn + 1."""
    i = hn
    while i > 0:
        p = (i - 1) >> 1
        if hk[p] <= key:
            break
        hk[i] = hk[p]
        hr[i] = hr[p]
        i = p
    hk[i] = key
    hr[i] = r
    return hn + 1


@njit(cache=True, inline="always")
def heap_pop(hk, hr, hn):
    """Remove the smallest entry of the heap of hn entries; returns hn - 1."""
    hn -= 1
    key = hk[hn]
    r = hr[hn]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= hn:
            break
        if c + 1 < hn and hk[c + 1] < hk[c]:
            c += 1
        if hk[c] >= key:
            break
        hk[i] = hk[c]
        hr[i] = hr[c]
        i = c
    if hn > 0:
        hk[i] = key
        hr[i] = r
    return hn


@njit(cache=True, inline="always")
def lazy_join(r, L, T, nlz, sum_c, hn, lz_c, hk, hr, cnt, nlzc, copy, output, gen, bs):
    """Decoding sequence r (context L, gen[r] tokens generated) joins the set at counter T.
    Returns (nlz, sum_c, hn)."""
    c = L - T
    lz_c[r] = c
    cnt[copy[r], (c - 1) % bs] += 1
    nlzc[copy[r]] += 1
    hn = heap_push(hk, hr, hn, output[r] - gen[r] + T, r)
    return nlz + 1, sum_c + c, hn


@njit(cache=True, inline="always")
def lazy_leave(r, nlz, sum_c, lz_c, cnt, nlzc, copy, bs):
    """Member r leaves the set (after its heap entry was popped). Returns (nlz, sum_c)."""
    c = lz_c[r]
    cnt[copy[r], (c - 1) % bs] -= 1
    nlzc[copy[r]] -= 1
    return nlz - 1, sum_c - c


@njit(cache=True, inline="always")
def lazy_write_back(r, L, nb, last_sh, prompt, prefix, gen, blocks, last_tok):
    """Write member r's state (context L, blocks nb, last token at last_sh) to the per-request
    arrays."""
    gen[r] = L - prefix[r] - prompt[r]
    blocks[r] = nb
    last_tok[r] = last_sh


@njit(cache=True, inline="always")
def lazy_dissolve(T, hn, hr, last_sh, lz_c, cnt, nlzc, prompt, prefix, gen, blocks, last_tok, bs):
    """Write every member back (between steps: context lz_c + T, blocks B(context - 1), no
    sliding window) and empty the set."""
    for h in range(hn):
        r = hr[h]
        L = lz_c[r] + T
        lazy_write_back(
            r, L, blocks_for(L - 1, bs, 0, 1.0), last_sh, prompt, prefix, gen, blocks, last_tok
        )
    cnt[:, :] = 0
    nlzc[:] = 0


@njit(cache=True, inline="always")
def lazy_step_blocks(T, cnt, ncopy, bs, need):
    """need[c] = the members of copy c that need a new block in the step at counter T."""
    ph = (-T) % bs
    for c in range(ncopy):
        need[c] = cnt[c, ph]


@njit(cache=True, inline="always")
def lazy_run_blocks(T, k, c, cnt, nlzc, bs):
    """New blocks of copy c's members in the steps at counters T + 1 .. T + k - 1."""
    q = (k - 1) // bs
    m = q * nlzc[c]
    ph = (-(T + 1)) % bs  # the slot that needs a block at T + 1; one lower at each step
    for _ in range((k - 1) - q * bs):
        m += cnt[c, ph]
        ph = ph - 1 if ph > 0 else bs - 1
    return m


@njit(cache=True, inline="always")
def lazy_step_fits(
    T, nlz, left, neag, eag, cnt, ncopy, bs, need, cfree, computed, target, prefix, prompt, gen,
    blocks, copy, per_chunk,
):  # fmt: skip
    """Whether this step's scheduling walk gives every running sequence (the members and the
    eager ones `eag`) its whole prefill chunk or decode token without preempting: the tokens
    fit `left` and the new blocks of each attention copy fit its free blocks. The walk's order
    then changes nothing, and the members are scheduled as a whole."""
    dem = nlz
    if nlz > 0:
        lazy_step_blocks(T, cnt, ncopy, bs, need)
    else:
        for c in range(ncopy):
            need[c] = 0
    for i in range(neag):
        r = eag[i]
        if computed[r] < target[r]:
            ch = target[r] - computed[r]
            dem += ch
            if per_chunk:
                nb = blocks_for(prefix[r] + computed[r] + ch, bs, 0, 1.0)
                if nb > blocks[r]:
                    need[copy[r]] += nb - blocks[r]
        else:
            dem += 1
            d = blocks_for(prefix[r] + prompt[r] + gen[r], bs, 0, 1.0) - blocks[r]
            if d > 0:
                need[copy[r]] += d
    if dem > left:
        return False
    for c in range(ncopy):
        if need[c] > cfree[c]:
            return False
    return True

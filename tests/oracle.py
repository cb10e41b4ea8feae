"""Pure-Python oracle of the batching scheduler (docs/scheduler.md), one step at a time.

Deliberately slow and literal: plain lists and a deque, no event skipping, no numpy. The kernel
`apex_fast.kernels.batching.simulate_stream` must give the same results (see
tests/test_kernel_vs_oracle.py).

Readings of docs/scheduler.md where the text leaves room (kept closest to vLLM 0.6 V0):
* the rejection test of rule 3 runs every time a request is at the head of `waiting` during the
  admission loop, before the stop tests (vLLM checks prompt limit and `AllocStatus.NEVER` first);
* a request that is rejected after it was already served (a lone running sequence that fills
  every block and preempts itself) ends with first_token = finish = -1, like any rejection;
* a scheduling pass that schedules nothing (only after such a self-preemption, or when every
  waiting request was rejected) is not a step: no time passes and nothing is recorded;
* `blocks_used` is the number of allocated blocks after the step's allocations, before the
  blocks of requests finishing in it are freed (`blocks_after` keeps the value after that);
* with `output_lag`, only first-token and finish times are delayed (rule 7b); inter-token gaps
  are measured between the steps that produce the tokens;
* the clock starts at the first arrival (rule 2 with nothing queued).
* closed loop (`max_concurrency` > 0): a FIFO semaphore of that many slots in front of the
  engine (vLLM bench `--max-concurrency`); a request is queued at the first step boundary where
  it has arrived and a slot is free, and enters at max(arrival, time its slot was released);
  slots are released when the finish is delivered (with `output_lag`, when the next step ends,
  or at once when the engine goes idle) or when the request is rejected.
* prefix caching (`block_keys`): physical blocks 0..num_blocks-1 and the free queue of vLLM V1's
  BlockPool, literally (an ordered dict of block ids, all blocks in id order at the start):
  allocation pops the head and drops the hash of the block it reuses, a hit on a free cached
  block takes it out of the queue ("touch"), a request's blocks are freed last block first and
  join the tail when no other request references them. `free` is always the queue's length.
  A block is cached (its key registered) once the tokens computed or scheduled fill it, unless
  another block already holds the key; lookup is the longest run of cached keys from block 0,
  at most (target - 1) // block_size blocks.
* attention copies (`cfg.copies` > 1, `copy[i]` the copy serving request i): one counter of free
  blocks per copy, num_blocks / copies each; a request's blocks all come from its copy, the
  rejection bound, the watermark and make-room look at that copy, and the victim of a
  preemption is the last running request of that copy. One waiting queue, one running list
  and one step for all copies. Not combined with prefix caching.
* multi-step (`cfg.num_scheduler_steps` N > 1, rule 9): a pass that schedules decodes runs
  them for N steps in `run_window`, each step a row; the window's tokens, finishes and gaps
  (one per sequence) are taken at its end, where its last row is written.
* SGLang's admission (policy 3, docs/scheduler.md "Admission policies"; prefill-only steps):
  `new_token_ratio` kept as (value at its last reset, decode steps since), the reservation sums
  taken over integers and multiplied by the ratio once, exactly as the kernel does, so that
  both compare the same floating-point numbers.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

# SGLang's constants (sglang 0.4.6.post5 global_config.py, schedule_policy.py), restated here
SGL_INIT_RATIO = 0.7
SGL_MIN_RATIO = 0.7 * 0.14
SGL_RATIO_DECAY = (SGL_INIT_RATIO - SGL_MIN_RATIO) / 600.0
SGL_CLIP = 4096
SGL_RETRACT_STEPS = 20

__all__ = ["OracleResult", "simulate"]

_WAITING = 0
_RUNNING = 1
_FINISHED = 2
_REJECTED = 3
_NEW = 4


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class _Req:
    __slots__ = (
        "idx",
        "arrival",
        "prompt",
        "output",
        "computed",
        "gen",
        "target",
        "blocks",
        "status",
        "first",
        "finish",
        "pre",
        "last_tok",
        "tokens",
        "block_ids",
        "nreg",
    )

    def __init__(self, idx: int, arrival: float, prompt: int, output: int) -> None:
        self.idx = idx
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        self.computed = 0
        self.gen = 0
        self.target = 0
        self.blocks = 0
        self.status = _NEW
        self.first: float | None = None
        self.finish: float | None = None
        self.pre = 0
        self.last_tok = 0.0
        self.tokens = 0  # tokens emitted (a recompute prefill emits the next token)
        self.block_ids: list[int] = []  # physical blocks held, in order (prefix caching)
        self.nreg = 0  # hashed positions looked up or registered


@dataclass
class OracleResult:
    """Per-request times (-1 for rejected requests) and one row per executed step."""

    first_token: list[float]
    finish: list[float]
    preemptions: list[int]
    tokens: list[int]  # tokens emitted per request (= gen; output for served requests)
    rejected: list[bool]
    start: list[float] = field(default_factory=list)
    duration: list[float] = field(default_factory=list)
    n_prefill_tokens: list[int] = field(default_factory=list)
    n_decode: list[int] = field(default_factory=list)
    n_samp: list[int] = field(default_factory=list)
    n_prefill_seqs: list[int] = field(default_factory=list)
    n_sched: list[int] = field(default_factory=list)  # sequences scheduled in the step
    n_running: list[int] = field(default_factory=list)  # len(running) while the step executes
    ctx: list[int] = field(default_factory=list)
    work: list[float] = field(default_factory=list)
    blocks_used: list[int] = field(default_factory=list)  # after allocations, before frees
    blocks_after: list[int] = field(default_factory=list)  # after finished requests freed theirs
    gaps: list[float] = field(default_factory=list)
    entry: list[float] = field(default_factory=list)  # time each request entered the system
    cached: list[int] = field(default_factory=list)  # cached prompt tokens at first admission
    cached_free: list[int] = field(default_factory=list)  # free blocks holding a key, per step

    @property
    def num_steps(self) -> int:
        return len(self.start)


def simulate(
    arrival, prompt, output, cfg, costs, prefix=None, max_concurrency=0, block_keys=None,
    copy=None,
) -> OracleResult:  # fmt: skip
    """Run docs/scheduler.md literally. `cfg` is a SchedulerConfig, `costs` a StepCosts (or any
    objects with the same attributes). `prefix` (per request, default 0): KV tokens present at
    admission that need no compute and that every token attends to (run_stream's `prefix`):
    they take blocks, add `prefix` keys to every prefill query and to every decode's context.
    `block_keys` (keys, offsets): prefix caching, as run_stream's. `copy` (per request): the
    attention copy serving it, as run_stream's."""
    n = len(arrival)
    reqs = [_Req(i, float(arrival[i]), int(prompt[i]), int(output[i])) for i in range(n)]
    pre_kv = [0] * n if prefix is None else [int(x) for x in prefix]
    assert len(pre_kv) == n and min(pre_kv, default=0) >= 0
    for i in range(1, n):
        assert reqs[i].arrival >= reqs[i - 1].arrival, "arrivals must be sorted"
    for r in reqs:
        assert r.prompt >= 1 and r.output >= 1

    num_blocks = int(cfg.num_blocks)
    bs = int(cfg.block_size)
    watermark = int(cfg.watermark)
    max_num_seqs = int(cfg.max_num_seqs)
    budget = int(cfg.budget)
    chunked = bool(cfg.chunked)
    tok_table = [float(x) for x in costs.tok_table]
    seq_table = [float(x) for x in costs.seq_table]
    c_attn = float(costs.c_attn)
    c_ctx = float(costs.c_ctx)
    overhead = float(costs.overhead)
    eager_floor = float(getattr(costs, "eager_floor", 0.0))
    host_seq = float(getattr(costs, "host_seq", 0.0))
    graph_max_seqs = int(getattr(costs, "graph_max_seqs", 1 << 62))
    piecewise_tokens = int(getattr(costs, "piecewise_tokens", 0))
    piecewise_floor = float(getattr(costs, "piecewise_floor", 0.0))
    output_lag = bool(getattr(cfg, "output_lag", False))
    win_blocks = int(getattr(cfg, "window_blocks", 0))
    full_frac = float(getattr(cfg, "full_kv_fraction", 1.0))
    # admission policy (docs/scheduler.md "Admission policies"): 0 whole prompt (vLLM V0),
    # 1 no-evict reservation (TensorRT-LLM), 2 per-chunk allocation (vLLM V1)
    policy = int(getattr(cfg, "admission", 0))
    assert policy in (0, 1, 2, 3)
    # 3: SGLang PrefillAdder, prompts split at prefill_chunk prefill tokens per step (0: unsplit)
    prefill_chunk = int(getattr(cfg, "prefill_chunk", 0))
    split = policy == 3 and prefill_chunk > 0
    assert not (policy == 3 and chunked), "SGLang's admission runs with prefill-only steps"
    sgl = {"ratio0": SGL_INIT_RATIO, "steps": 0.0, "blocked": math.inf}
    # multi-step scheduling (vLLM --num-scheduler-steps, rule 9): decode steps per scheduler call
    nsteps = int(getattr(cfg, "num_scheduler_steps", 1))
    assert nsteps >= 1 and (nsteps == 1 or (policy == 0 and not chunked))
    copies = int(getattr(cfg, "copies", 1))
    copy_of = [0] * n if copy is None else [int(x) for x in copy]
    assert num_blocks % copies == 0 and all(0 <= c < copies for c in copy_of)
    copy_blocks = num_blocks // copies  # one copy's pool
    cfree = [copy_blocks] * copies  # free blocks per copy

    def kv_blocks(tokens: int) -> int:
        """Blocks of a sequence of `tokens` tokens: full-attention layers keep all, the
        sliding-window layers (share 1 - full_frac of the bytes) at most win_blocks."""
        c = _cdiv(tokens, bs)
        if win_blocks <= 0 or c <= win_blocks:
            return c
        return math.ceil(full_frac * c + (1.0 - full_frac) * win_blocks)

    # prefix cache: request i's hashed prompt blocks have keys[off[i]:off[i+1]]
    if block_keys is None:
        pkeys: list[list[int]] = [[] for _ in range(n)]
    else:
        ks, off = [int(x) for x in block_keys[0]], [int(x) for x in block_keys[1]]
        pkeys = [ks[off[i] : off[i + 1]] for i in range(n)]
    pc = any(pkeys)
    assert not (pc and copies > 1), "prefix caching runs with one attention copy"
    nb_pc = num_blocks if pc else 0  # physical blocks are tracked only with the cache on
    free_q: OrderedDict[int, None] = OrderedDict((b, None) for b in range(nb_pc))
    block_key: list[int | None] = [None] * nb_pc
    key_block: dict[int, int] = {}
    ref = [0] * nb_pc
    cached = [-1] * n

    def take_block() -> int:
        b, _ = free_q.popitem(last=False)
        if block_key[b] is not None:
            del key_block[block_key[b]]  # reused: its hash is dropped
            block_key[b] = None
        ref[b] = 1
        return b

    def release_blocks(r: _Req) -> int:
        """Free r's blocks, last first; the number that joined the free queue."""
        freed = 0
        for b in reversed(r.block_ids):
            ref[b] -= 1
            if ref[b] == 0:
                free_q[b] = None
                freed += 1
        r.block_ids = []
        r.nreg = 0
        return freed

    def lookup(r: _Req) -> tuple[int, int]:
        """(hit blocks, hit blocks referenced by running requests)."""
        h = shared = 0
        for k in pkeys[r.idx][: (r.target - 1) // bs]:
            b = key_block.get(k)
            if b is None:
                break
            h += 1
            shared += ref[b] > 0
        return h, shared

    def register(r: _Req, done: int) -> None:
        keys = pkeys[r.idx]
        while r.nreg < min(len(keys), done // bs):
            k = keys[r.nreg]
            if k not in key_block:
                b = r.block_ids[r.nreg]
                key_block[k] = b
                block_key[b] = k
            r.nreg += 1

    res = OracleResult([], [], [], [], [])
    waiting: deque[_Req] = deque()
    running: list[_Req] = []
    free = num_blocks
    nxt = 0  # next request (by index) not yet queued
    lagged: list[tuple[_Req, bool, bool]] = []  # (request, first token?, finish?) to deliver
    now = reqs[0].arrival if n else 0.0
    entry = [float(a) for a in arrival]
    slots: deque[float] = deque([float("-inf")] * max_concurrency)  # release times, FIFO

    def release(t: float) -> None:
        if max_concurrency > 0:
            slots.append(t)

    def reject(r: _Req) -> None:
        # reported with first_token = finish = -1 whatever it was served before (rule 3)
        r.status = _REJECTED
        release(now)

    preempted: list[_Req] = []  # preempted in this pass, in order

    def preempt(victim: _Req) -> None:
        nonlocal free
        running.remove(victim)
        freed = release_blocks(victim) if pc else victim.blocks
        free += freed
        cfree[copy_of[victim.idx]] += freed
        victim.blocks = 0
        victim.computed = 0
        victim.status = _WAITING
        victim.pre += 1
        preempted.append(victim)

    def full_need(r: _Req) -> int:
        """Blocks of r to completion: prompt + max output under no-evict, else its target."""
        if policy == 1:
            return kv_blocks(pre_kv[r.idx] + r.prompt + r.output)
        return kv_blocks(pre_kv[r.idx] + r.target)

    def rejected_at_head(r: _Req) -> bool:
        """Rule 3 for the head of `waiting` (sets its target = prompt + gen)."""
        r.target = r.prompt + r.gen
        if policy == 3:  # SGLang: prompt + clipped output must fit with nothing else running
            never = (
                kv_blocks(pre_kv[r.idx] + r.target) * bs + min(r.output, SGL_CLIP)
                >= (copy_blocks - watermark) * bs
            )
        else:
            never = full_need(r) > copy_blocks - watermark
        return never or (not chunked and not split and r.target > budget)

    def sgl_ratio() -> float:
        """SGLang's new_token_ratio: decays one step per decode step, floored."""
        if sgl["steps"] == 0:
            return sgl["ratio0"]
        return max(sgl["ratio0"] - sgl["steps"] * SGL_RATIO_DECAY, SGL_MIN_RATIO)

    def sgl_fits(r: _Req, hit: int, shared: int) -> bool:
        """SGLang PrefillAdder.add_one_req: r's tokens to compute + clipped output < free
        tokens less the clipped remaining outputs of decoding requests x ratio, less the clipped
        outputs of the requests whose prefill completes in this step."""
        c = copy_of[r.idx]
        s_dec = sum(
            min(q.output - q.gen, SGL_CLIP)
            for q in running
            if copy_of[q.idx] == c and q.computed >= q.target
        )
        s_new = 0
        for q, is_pf, _, _ in sched:
            if is_pf and copy_of[q.idx] == c and q.computed >= q.target:
                s_dec -= min(q.output - q.gen, SGL_CLIP)
                s_new += min(q.output, SGL_CLIP)
        ext = (kv_blocks(pre_kv[r.idx] + r.target) - hit) * bs
        avail = (cfree[c] - (hit - shared)) * bs
        return avail - ext - min(r.output, SGL_CLIP) - s_new > sgl_ratio() * s_dec

    def sgl_next_chunk(left: int) -> int:
        """SGLang: the running request whose prompt is split gets its next chunk first."""
        for r in running:
            if r.computed < r.target:
                c = min(r.target - r.computed, prefill_chunk)
                if make_room_chunk(r, c):
                    sched.append((r, True, c, r.computed))
                    r.computed += c
                    if pc:
                        register(r, r.computed)
                    left -= c
                break
        return left

    def sgl_retract() -> None:
        """SGLang check_decode_mem / retract_decode before a decode step, per copy; then the
        ratio is re-estimated, or decays one step."""
        nonlocal free
        retracted = False
        for c in range(copies):
            mine = [q for q in running if copy_of[q.idx] == c]
            need = sum(max(kv_blocks(pre_kv[q.idx] + q.prompt + q.gen) - q.blocks, 0) for q in mine)
            if cfree[c] >= need:
                continue
            first = True
            while first or cfree[c] * bs < SGL_RETRACT_STEPS * len(mine):
                if len(mine) <= 1:
                    break
                first = False
                # fewest outputs; ties: longest prompt, then the latest admitted
                pos = {id(q): i for i, q in enumerate(running)}
                v = min(mine, key=lambda q: (q.gen, -q.prompt, -pos[id(q)]))
                mine.remove(v)
                running.remove(v)
                freed = release_blocks(v) if pc else v.blocks
                free += freed
                cfree[c] += freed
                v.blocks = 0
                v.computed = 0
                v.status = _WAITING
                v.pre += 1
                waiting.append(v)  # back of the queue (SGLang _extend_requests_to_queue)
                retracted = True
        if retracted:
            dec = sum(q.gen for q in running)
            mx = sum(q.output for q in running)
            sgl["ratio0"] = min(1.0, (dec + SGL_RETRACT_STEPS * len(running)) / mx)
            sgl["steps"] = 0.0
        else:
            sgl["steps"] += 1.0

    def reserved(c: int) -> int:
        """No-evict: blocks the running requests of copy c still need to reach their maximum
        output."""
        return sum(max(full_need(q) - q.blocks, 0) for q in running if copy_of[q.idx] == c)

    def admit(r: _Req, hit: int, need: int) -> int:
        """Admit the head r with `hit` cached blocks and `need` blocks in all; returns the
        cached tokens."""
        nonlocal free
        waiting.popleft()
        r.blocks = need
        if pc:
            r.block_ids = []
            for k in pkeys[r.idx][:hit]:
                b = key_block[k]
                if ref[b] == 0:
                    del free_q[b]  # touch
                ref[b] += 1
                r.block_ids.append(b)
            r.nreg = hit
            r.block_ids += [take_block() for _ in range(need - hit)]
            cfree[copy_of[r.idx]] -= free - len(free_q)
            free = len(free_q)
        else:
            free -= need
            cfree[copy_of[r.idx]] -= need
        if cached[r.idx] < 0:
            cached[r.idx] = hit * bs
        r.computed = hit * bs
        r.status = _RUNNING
        running.append(r)
        return hit * bs

    def make_room(r: _Req) -> bool:
        """Rule 4c: room for the KV of r's newest token (multi-step, rule 9: and of the window's
        nsteps - 1 lookahead tokens), preempting the last running request of r's copy while
        that copy has fewer blocks free than r lacks. False if r preempted itself."""
        nonlocal free
        need = kv_blocks(pre_kv[r.idx] + r.prompt + r.gen + nsteps - 1)
        assert need >= r.blocks and (nsteps > 1 or need - r.blocks <= 1), (need, r.blocks)
        c = copy_of[r.idx]
        if need > r.blocks:
            d = need - r.blocks
            while cfree[c] < d:
                victim = [q for q in running if copy_of[q.idx] == c][-1]
                preempt(victim)
                if victim is r:
                    return False
            r.blocks += d
            free -= d
            cfree[c] -= d
            if pc:
                r.block_ids += [take_block() for _ in range(d)]
        return True

    def make_room_chunk(r: _Req, c: int) -> bool:
        """Per-chunk allocation: the blocks of r's next chunk of c tokens, preempting the last
        running request of r's copy while they are short. False if r preempted itself."""
        nonlocal free
        need = kv_blocks(pre_kv[r.idx] + r.computed + c) - r.blocks
        if need <= 0:
            return True
        k = copy_of[r.idx]
        while cfree[k] < need:
            victim = [q for q in running if copy_of[q.idx] == k][-1]
            preempt(victim)
            if victim is r:
                return False
        r.blocks += need
        free -= need
        cfree[k] -= need
        if pc:
            r.block_ids += [take_block() for _ in range(need)]
        return True

    # this pass's schedule, each entry: (request, is_prefill, tokens, computed_before)
    sched: list[tuple[_Req, bool, int, int]] = []

    def queue_arrivals() -> None:
        """Rule 1: arrivals join the back of `waiting` (behind a free slot in a closed loop)."""
        nonlocal nxt
        while nxt < n and reqs[nxt].arrival <= now:
            if max_concurrency > 0:
                if not slots:
                    break
                entry[nxt] = max(reqs[nxt].arrival, slots.popleft())
            reqs[nxt].status = _WAITING
            waiting.append(reqs[nxt])
            nxt += 1

    def admit_waiting(left: int) -> int:
        """Rules 3, 4a, 5b: reject or admit heads of `waiting` while they fit; chunked, the
        first chunk is what `left` allows, not chunked the whole prompt must fit. Returns the
        tokens left."""
        if split:
            left = sgl_next_chunk(left)
        while waiting:
            if policy == 2 and preempted:
                break  # vLLM V1 admits nothing in a step that preempted
            n_pf = sum(c for _, is_pf, c, _ in sched if is_pf)
            if policy == 3 and n_pf == 0:  # SGLang batch_is_full: no prefill tried
                if len(running) >= sgl["blocked"]:
                    break
                sgl["blocked"] = math.inf
            r = waiting[0]
            if rejected_at_head(r):
                waiting.popleft()
                reject(r)
                continue
            hit, shared = lookup(r) if pc else (0, 0)
            u = r.target - hit * bs  # tokens to compute
            c = min(u, left) if chunked else u
            if split:
                c = min(u, prefill_chunk - n_pf)
            if c <= 0 or c > left or len(running) + 1 > max_num_seqs:
                break
            cf = cfree[copy_of[r.idx]]  # the free blocks of r's attention copy
            if policy == 3:  # the first chunk's blocks; SGLang's token test
                need = kv_blocks(pre_kv[r.idx] + hit * bs + c)
                if cf - (need - shared) < watermark or not sgl_fits(r, hit, shared):
                    if len(running) > len(sched):  # batch_is_full on a decoding batch
                        sgl["blocked"] = len(running)
                    break
                avail = cf
            elif policy == 2:  # the blocks of the first chunk only
                need = kv_blocks(pre_kv[r.idx] + hit * bs + c)
                avail = cf
            elif policy == 1:  # the whole target now, prompt + max output reserved
                need = kv_blocks(pre_kv[r.idx] + r.target)
                avail = cf - reserved(copy_of[r.idx]) - (full_need(r) - need)
            else:
                need = kv_blocks(pre_kv[r.idx] + r.target)
                avail = cf
            if avail - (need - shared) < watermark:
                break
            cb = admit(r, hit, need)
            sched.append((r, True, c, cb))
            r.computed = cb + c
            if pc:
                register(r, r.computed)
            left -= c
        return left

    def schedule_running(left: int) -> int:
        """Rules 4c, 5a: walk `running` from the front, a prefill chunk (chunked only) or one
        decode token each, until the budget is used up; a request that preempts itself is
        skipped (with one copy it was the last running one)."""
        if policy == 3 and running:
            sgl_retract()
        i = 0
        while i < len(running):
            r = running[i]
            prefill = r.computed < r.target
            c = min(r.target - r.computed, left) if prefill else min(1, left)
            if c == 0:
                break
            if not prefill and not make_room(r):
                continue  # r preempted itself: on with the next (another copy's) request
            if prefill and policy in (2, 3) and not make_room_chunk(r, c):
                continue
            sched.append((r, prefill, c, r.computed))
            if prefill:
                r.computed += c
                if pc:
                    register(r, r.computed)
            left -= c
            i += 1
        return left

    def step_cost(j: int = 0) -> tuple[float, dict[str, float], list[_Req]]:
        """Rule 6: (duration, the step's tallies, the sequences that sample a token); `j`: the
        step's place in a multi-step window (each decode's context has grown by j)."""
        t = {"n_pf": 0, "n_pf_seqs": 0, "n_dec": 0, "n_samp": 0, "work": 0.0, "ctx": 0}
        samplers: list[_Req] = []
        for r, is_pf, c, before in sched:
            if is_pf:
                t["n_pf"] += c
                t["n_pf_seqs"] += 1
                t["work"] += c * (pre_kv[r.idx] + before + (c + 1) / 2)
                if before + c == r.target:
                    t["n_samp"] += 1
                    samplers.append(r)
            else:
                t["n_dec"] += 1
                t["n_samp"] += 1
                t["ctx"] += pre_kv[r.idx] + r.prompt + r.gen + j
                samplers.append(r)
        n_tok = t["n_pf"] + t["n_dec"]
        assert n_tok <= budget
        assert t["n_samp"] <= max_num_seqs
        assert 0 <= free <= num_blocks
        if policy == 1:  # no-evict: never preempts, the reservations always fit
            assert not preempted and all(cfree[k] - reserved(k) >= 0 for k in range(copies))
        if policy in (2, 3):  # per-chunk: no request holds more blocks than its tokens need
            for q in running:
                assert q.blocks <= kv_blocks(pre_kv[q.idx] + max(q.computed, q.prompt + q.gen))
        for c in range(copies):  # no copy over its pool; a request's blocks are in its copy
            assert 0 <= cfree[c] <= copy_blocks
            if not pc:
                held_c = sum(q.blocks for q in running if copy_of[q.idx] == c)
                assert held_c + cfree[c] == copy_blocks, (c, held_c, cfree[c])
        assert sum(cfree) == free
        if pc:
            assert free == len(free_q)
            held = {b for q in running for b in q.block_ids}
            assert len(held) == num_blocks - free  # referenced blocks + free queue = capacity
            assert all(ref[b] == sum(q.block_ids.count(b) for q in running) for b in held)
        host = overhead + host_seq * len(sched)
        gpu = tok_table[n_tok] + seq_table[t["n_samp"]] + c_attn * t["work"] + c_ctx * t["ctx"]
        # launch floor: none when a decode-only batch replays a whole CUDA graph
        if t["n_pf"] == 0 and t["n_dec"] <= graph_max_seqs:
            floor = 0.0
        elif n_tok <= piecewise_tokens:
            floor = piecewise_floor
        else:
            floor = eager_floor
        return host + max(gpu, floor), t, samplers

    def deliver_lagged(duration: float) -> None:
        """Rule 7b: outputs of the previous step are delivered when this one ends."""
        for r, is_first, is_finish in lagged:
            if is_first:
                r.first += duration
            if is_finish:
                r.finish += duration
                release(r.finish)
        lagged.clear()

    def sample_and_finish(samplers: list[_Req], k: int = 1) -> None:
        """Rule 7: one token per sampling sequence; first tokens; finishes free their blocks.
        Multi-step (rule 9): the k tokens of a window at once, those past the output discarded,
        one gap per window."""
        nonlocal free
        for r in samplers:
            new = min(k, r.output - r.gen)
            assert new >= 1
            r.gen += new
            r.tokens += new
            is_first = r.first is None
            if is_first:
                r.first = now
            else:
                res.gaps.append(now - r.last_tok)
            r.last_tok = now
            is_finish = r.gen == r.output
            if is_finish:
                r.finish = now
                r.status = _FINISHED
                freed = release_blocks(r) if pc else r.blocks
                free += freed
                cfree[copy_of[r.idx]] += freed
                r.blocks = 0
                running.remove(r)
                if not output_lag:
                    release(now)
            if output_lag and (is_first or is_finish):
                lagged.append((r, is_first, is_finish))

    def write_record(start: float, duration: float, t: dict[str, float], n_run: int, peak: int):
        """One row per step (the kernel's records, expanded)."""
        res.start.append(start)
        res.duration.append(duration)
        res.n_prefill_tokens.append(t["n_pf"])
        res.n_decode.append(t["n_dec"])
        res.n_samp.append(t["n_samp"])
        res.n_prefill_seqs.append(t["n_pf_seqs"])
        res.n_sched.append(len(sched))
        res.n_running.append(n_run)
        res.ctx.append(t["ctx"])
        res.work.append(t["work"])
        res.blocks_used.append(peak)
        res.blocks_after.append(num_blocks - free)
        res.cached_free.append(sum(1 for b in free_q if block_key[b] is not None) if pc else 0)

    def run_window() -> None:
        """Rule 9 (multi-step): the decodes scheduled at the window's start run nsteps steps,
        no scheduler call in between (no admission, no preemption, nothing leaves); each holds
        the KV blocks of its context + nsteps - 1 lookahead tokens; the window's tokens are
        delivered at its end, where finished requests leave."""
        nonlocal now
        batch = [r for r, _, _, _ in sched]
        for r in batch:  # the lookahead was reserved by make_room, exactly
            assert r.blocks == kv_blocks(pre_kv[r.idx] + r.prompt + r.gen + nsteps - 1)
        n_run = len(running)
        peak = num_blocks - free
        for j in range(nsteps):
            duration, tally, _ = step_cost(j)
            if j == 0:
                deliver_lagged(duration)
            start = now
            now = now + duration
            if j == nsteps - 1:
                sample_and_finish(batch, nsteps)
            write_record(start, duration, tally, n_run, peak)

    while True:
        queue_arrivals()
        # 2. idle: jump to the next arrival
        if not running and not waiting:
            if max_concurrency > 0 and lagged:
                for r, _, is_finish in lagged:
                    if is_finish:
                        release(r.finish)
                lagged.clear()
                continue
            lagged.clear()  # 7b: the engine goes idle, pending outputs stay where they are
            sgl["ratio0"], sgl["steps"] = SGL_INIT_RATIO, 0.0  # SGLang: idle resets the ratio
            if nxt >= n:
                break
            now = max(now, reqs[nxt].arrival)
            continue

        sched.clear()
        preempted.clear()
        if chunked:  # 5. running requests first, then new prefills (even after a preemption)
            admit_waiting(schedule_running(budget))
        else:  # 4. prefills; decodes only in a step without prefills
            left = admit_waiting(budget)
            if not sched:
                schedule_running(left)

        # preempted requests go to the front of `waiting` once the pass is over (vLLM
        # `waiting.extendleft(preempted)`), the last one preempted at the very front
        for v in preempted:
            waiting.appendleft(v)

        if not sched:
            # rule 8: only after every waiting head was rejected or a lone sequence preempted
            # itself; the next pass admits or rejects the head with all blocks free.
            assert not running, "nothing scheduled while requests run"
            assert free == num_blocks
            continue

        if nsteps > 1 and not any(is_pf for _, is_pf, _, _ in sched):
            run_window()  # rule 9: a decode window of nsteps steps
            continue
        duration, tally, samplers = step_cost()
        deliver_lagged(duration)
        start = now
        n_run = len(running)
        now = now + duration
        peak = num_blocks - free
        sample_and_finish(samplers)
        write_record(start, duration, tally, n_run, peak)

    for r in reqs:
        assert r.status in (_FINISHED, _REJECTED), r.status
        served = r.status == _FINISHED
        res.first_token.append(r.first if served else -1.0)
        res.finish.append(r.finish if served else -1.0)
        res.preemptions.append(r.pre)
        res.tokens.append(r.tokens)
        res.rejected.append(not served)
    res.entry = entry
    res.cached = [
        c if not rej and c > 0 else 0 for c, rej in zip(cached, res.rejected, strict=True)
    ]
    return res

"""Closed forms and invariants of the batching kernel (docs/scheduler.md), via run_stream."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import simulate
from test_kernel_vs_oracle import cases, make_costs

from apex_fast.sim.stream import SchedulerConfig, StepCosts, run_stream

RTOL = 1e-9
ATOL = 1e-12


def _run(arrival, prompt, output, cfg, costs):
    return run_stream(
        np.asarray(arrival, np.float64),
        np.asarray(prompt, np.int64),
        np.asarray(output, np.int64),
        cfg,
        costs,
    )


def _close(a, b) -> bool:
    return bool(np.allclose(a, b, rtol=RTOL, atol=ATOL))


def _random_costs(seed: int, budget: int, max_num_seqs: int, **kw) -> StepCosts:
    rng = np.random.default_rng(seed)
    return make_costs(
        budget,
        max_num_seqs,
        rng.uniform(0.0, 2e-5, budget),
        rng.uniform(0.0, 2e-4, max_num_seqs),
        **kw,
    )


# --------------------------------------------------------------------------- closed forms


@settings(max_examples=100, deadline=None)
@given(
    prompt=st.integers(1, 600),
    output=st.integers(1, 120),
    chunked=st.booleans(),
    bs=st.sampled_from([1, 4, 16]),
    arrival=st.floats(0.0, 100.0),
    seed=st.integers(0, 2**32 - 1),
    c_attn=st.floats(0.0, 1e-7),
    c_ctx=st.floats(0.0, 1e-5),
    overhead=st.floats(0.0, 1e-2),
)
def test_single_request_closed_form(
    prompt, output, chunked, bs, arrival, seed, c_attn, c_ctx, overhead
):
    """Alone: TTFT = overhead + tok[P] + seq[1] + c_attn*P(P+1)/2; decode k (context P + k)
    lasts overhead + tok[1] + seq[1] + c_ctx*(P + k)."""
    budget = 640  # >= prompt: one prefill step in both modes
    cfg = SchedulerConfig(
        num_blocks=-(-(prompt + output) // bs), block_size=bs, budget=budget, chunked=chunked
    )
    costs = _random_costs(
        seed, budget, cfg.max_num_seqs, c_attn=c_attn, c_ctx=c_ctx, overhead=overhead
    )
    tok, seq = costs.tok_table, costs.seq_table
    res = _run([arrival], [prompt], [output], cfg, costs)

    ttft = overhead + tok[prompt] + seq[1] + c_attn * prompt * (prompt + 1) / 2
    k = np.arange(1, output)
    dec = overhead + tok[1] + seq[1] + c_ctx * (prompt + k)
    assert _close(res.first_token[0], arrival + ttft)
    assert _close(res.finish[0], arrival + ttft + dec.sum())
    assert res.preemptions[0] == 0

    s = res.steps()
    assert res.num_steps == output
    assert _close(s["start"][0], arrival)
    assert _close(s["duration"], np.concatenate([[ttft], dec]))
    assert s["n_prefill_tokens"].tolist() == [prompt] + [0] * (output - 1)
    assert s["n_decode"].tolist() == [0] + [1] * (output - 1)
    assert s["n_samp"].tolist() == [1] * output
    assert s["ctx"].tolist() == [0] + (prompt + k).tolist()
    assert _close(s["work"], [prompt * (prompt + 1) / 2] + [0.0] * (output - 1))
    assert res.gap_hist.sum() == output - 1
    # the last block is allocated exactly when the context reaches it
    assert res.rec_blocks[0] == -(-prompt // bs)
    assert res.rec_blocks.max() <= cfg.num_blocks


def test_chunked_prefill_1000_tokens_budget_256_takes_4_steps():
    cfg = SchedulerConfig(num_blocks=200, block_size=16, budget=256, chunked=True)
    costs = _random_costs(7, 256, cfg.max_num_seqs, c_attn=1e-8, c_ctx=1e-6, overhead=1e-3)
    tok, seq = costs.tok_table, costs.seq_table
    res = _run([0.0], [1000], [3], cfg, costs)
    s = res.steps()
    assert res.num_steps == 4 + 2
    chunks = [256, 256, 256, 232]
    before = [0, 256, 512, 768]
    assert s["n_prefill_tokens"][:4].tolist() == chunks
    assert s["n_samp"][:4].tolist() == [0, 0, 0, 1]
    work = [c * (b + (c + 1) / 2) for c, b in zip(chunks, before, strict=True)]
    assert _close(s["work"][:4], work)
    assert sum(work) == 1000 * 1001 / 2
    dur = [1e-3 + tok[c] + seq[int(c == 232)] + 1e-8 * w for c, w in zip(chunks, work, strict=True)]
    assert _close(s["duration"][:4], dur)
    assert _close(res.first_token[0], sum(dur))
    assert s["n_decode"].tolist() == [0, 0, 0, 0, 1, 1]


def test_chunked_prefill_shares_budget_with_decodes():
    """Decodes go first; the prefill chunk takes what the budget leaves."""
    cfg = SchedulerConfig(num_blocks=500, block_size=16, budget=100, chunked=True)
    costs = make_costs(100, cfg.max_num_seqs)
    res = _run([0.0, 0.0, 1.0], [10, 10, 300], [1000, 1000, 2], cfg, costs)
    s = res.steps()
    t = np.searchsorted(s["start"], 1.0)  # first step that sees the third arrival
    assert s["n_decode"][t] == 2
    assert s["n_prefill_tokens"][t : t + 4].tolist() == [98, 98, 98, 6]


def test_output_one_finishes_at_prefill():
    for chunked in (False, True):
        cfg = SchedulerConfig(num_blocks=100, block_size=16, budget=512, chunked=chunked)
        costs = make_costs(512, cfg.max_num_seqs)
        res = _run([0.0, 0.0, 0.3], [50, 7, 120], [1, 1, 1], cfg, costs)
        assert (res.finish == res.first_token).all()
        assert (res.first_token > 0).all()
        assert res.gap_hist.sum() == 0
        s = res.steps()
        assert s["n_decode"].sum() == 0
        assert s["n_samp"].sum() == 3


@pytest.mark.parametrize("chunked", [False, True])
def test_rejection_of_prompt_larger_than_kv(chunked):
    # 20 blocks of 16, watermark 2: at most 18 blocks = 288 tokens per request
    cfg = SchedulerConfig(
        num_blocks=20, block_size=16, watermark=2, budget=512, max_num_seqs=4, chunked=chunked
    )
    costs = make_costs(512, 4)
    res = _run([0.0, 0.1, 0.2, 0.3], [289, 288, 500, 10], [5, 5, 5, 5], cfg, costs)
    assert res.first_token[0] == -1.0 and res.finish[0] == -1.0
    assert res.first_token[2] == -1.0 and res.finish[2] == -1.0
    assert res.finish[1] > res.first_token[1] > 0.1
    assert res.finish[3] > res.first_token[3] > 0.3
    assert res.preemptions.tolist() == [0, 0, 0, 0]
    assert res.steps()["n_prefill_tokens"].sum() == 288 + 10


def test_non_chunked_rejects_prompt_over_budget():
    cfg = SchedulerConfig(num_blocks=100, block_size=16, budget=128, chunked=False)
    res = _run([0.0, 0.0], [129, 128], [2, 2], cfg, make_costs(128, cfg.max_num_seqs))
    assert res.first_token[0] == -1.0 and res.finish[0] == -1.0
    assert res.finish[1] > 0
    cfg = SchedulerConfig(num_blocks=100, block_size=16, budget=128, chunked=True)
    res = _run([0.0, 0.0], [129, 128], [2, 2], cfg, make_costs(128, cfg.max_num_seqs))
    assert (res.finish > 0).all()


def test_rejected_after_service_reports_no_first_token():
    """A lone sequence that outgrows the whole KV cache preempts itself; its recompute can never
    fit, so it is rejected, and rule 3 says a rejected request has first-token time -1."""
    cfg = SchedulerConfig(num_blocks=1, block_size=1, budget=8, max_num_seqs=1, chunked=False)
    res = _run([0.0], [1], [2], cfg, make_costs(8, 1))
    assert res.preemptions[0] == 1
    assert res.finish[0] == -1.0
    assert res.first_token[0] == -1.0


def test_record_blocks_are_those_after_its_last_step_allocations():
    """docs: `blocks_used` is taken after the allocations of the record's last step (before the
    finishing request frees its blocks)."""
    cfg = SchedulerConfig(num_blocks=10, block_size=1, budget=8, max_num_seqs=1, chunked=False)
    res = _run([0.0], [1], [4], cfg, make_costs(8, 1))
    s = res.steps()
    assert res.num_steps == 4
    # prefill: 1 block; decode k writes the KV of context 1 + k -> 2, 3, 4 blocks
    last = np.cumsum(res.rec_count) - 1
    want = np.array([1, 2, 3, 4])[last]
    assert res.rec_blocks.tolist() == want.tolist()
    assert s["n_decode"].tolist() == [0, 1, 1, 1]
    assert s["n_sched"].tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("chunked", [False, True])
def test_eager_floor_applies_to_prefill_steps_only(chunked):
    cfg = SchedulerConfig(num_blocks=100, block_size=16, budget=256, chunked=chunked)
    costs = make_costs(256, cfg.max_num_seqs, overhead=1e-3, eager_floor=0.05)
    res = _run([0.0, 0.0], [10, 20], [3, 6], cfg, costs)
    s = res.steps()
    pf = s["n_prefill_tokens"] > 0
    assert pf.sum() == 1 and pf[0]
    assert _close(s["duration"][0], 1e-3 + 0.05)
    assert (s["duration"][~pf] < 0.01).all()
    assert _close(res.first_token, [0.051, 0.051])


def test_output_lag_single_request():
    """7b: the first token is delivered when the next step ends; the finish of the last step
    stays (the engine goes idle)."""
    cfg = SchedulerConfig(num_blocks=100, block_size=16, budget=256, output_lag=True)
    costs = make_costs(256, cfg.max_num_seqs)
    base = _run([0.0], [100], [5], SchedulerConfig(100, 16, 0, 256, 256, True), costs)
    lag = _run([0.0], [100], [5], cfg, costs)
    d = base.steps()["duration"]
    assert _close(lag.first_token[0], base.first_token[0] + d[1])
    assert _close(lag.finish[0], base.finish[0])
    one = _run([0.0], [100], [1], cfg, costs)
    assert one.first_token[0] == one.finish[0] == one.steps()["duration"][0]


def test_output_lag_finish_waits_for_the_next_step():
    cfg = SchedulerConfig(num_blocks=100, block_size=16, budget=256, output_lag=True)
    costs = make_costs(256, cfg.max_num_seqs)
    res = _run([0.0, 0.0], [10, 10], [2, 4], cfg, costs)
    s = res.steps()
    end = s["start"] + s["duration"]
    # steps: prefill both, decode both (0 finishes), decode 1, decode 1 (1 finishes, then idle)
    assert res.num_steps == 4
    assert _close(res.first_token, [end[1], end[1]])
    assert _close(res.finish, [end[2], end[3]])


@pytest.mark.parametrize("chunked", [False, True])
def test_output_lag_rejected_after_service(chunked):
    """A lone request outgrows the KV cache right after its prefill and is rejected while its
    first token is still waiting for delivery: it must still report -1 (rule 3)."""
    cfg = SchedulerConfig(1, 1, 0, 1, 8, chunked, output_lag=True)
    res = _run([0.0, 0.0], [1, 1], [2, 1], cfg, make_costs(8, 1))
    assert res.preemptions.tolist() == [1, 0]
    assert res.finish[0] == -1.0
    assert res.first_token[0] == -1.0
    assert res.finish[1] == res.first_token[1] > 0


# --------------------------------------------------------------------------- KV pressure


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(2, 8),
    prompt=st.integers(1, 60),
    output=st.integers(2, 80),
    bs=st.sampled_from([1, 4, 16]),
    chunked=st.booleans(),
    slack=st.integers(0, 3),
    a=st.floats(0.0, 1e-4),
    b=st.floats(0.0, 1e-3),
    c_ctx=st.floats(0.0, 1e-6),
    extra=st.floats(0.0, 1e-6),
    overhead=st.floats(1e-4, 1e-2),
)
def test_more_blocks_never_delay_the_makespan(
    n, prompt, output, bs, chunked, slack, a, b, c_ctx, extra, overhead
):
    """n identical requests at t = 0, limits that let them all run at once, linear step costs
    and c_attn >= c_ctx. With ample KV they all prefill in one step and finish together after
    `output` steps at T. With a tight KV cache (preemption by recompute) the last one finishes
    no earlier than T: it still needs `output` sampling steps, every recompute adds tokens and
    prefill attention (>= the context read of the decode it replaces) and costs with one fixed
    overhead per step. (Single requests CAN finish earlier with fewer blocks, see below.)"""
    budget = n * (prompt + output)
    per_req = -(-(prompt + output) // bs)
    costs = make_costs(
        budget, n, np.full(budget, a), np.full(n, b), c_attn=c_ctx + extra, c_ctx=c_ctx,
        overhead=overhead,
    )  # fmt: skip
    arrival, p, o = np.zeros(n), np.full(n, prompt), np.full(n, output)
    ample = SchedulerConfig(n * per_req, bs, 0, n, budget, chunked)
    tight = SchedulerConfig(per_req + slack, bs, 0, n, budget, chunked)
    ra = _run(arrival, p, o, ample, costs)
    rt = _run(arrival, p, o, tight, costs)
    assert ra.preemptions.sum() == 0
    assert ra.num_steps == output
    assert np.all(ra.finish == ra.finish[0])
    assert (rt.finish > 0).all()  # each request fits alone: nobody is rejected
    assert rt.finish.max() >= ra.finish[0] * (1 - 1e-12)
    assert rt.num_steps >= ra.num_steps


def test_fewer_blocks_can_make_a_request_finish_earlier():
    """Why the test above only bounds the makespan: with room for one request only, the first
    one decodes alone in cheaper steps and finishes before the batched run would."""
    costs = make_costs(200, 2, c_attn=1e-7, c_ctx=1e-5, overhead=1e-3)
    # 80 + 40 tokens = 8 blocks each; 9 blocks admit the first (5 blocks) but not the second
    arrival, p, o = [0.0, 0.0], [80, 80], [40, 40]
    ample = _run(arrival, p, o, SchedulerConfig(100, 16, 0, 2, 200, False), costs)
    tight = _run(arrival, p, o, SchedulerConfig(9, 16, 0, 2, 200, False), costs)
    assert tight.preemptions.sum() == 0  # the second one simply waits for blocks
    assert tight.finish[0] < ample.finish[0]
    assert tight.finish.max() > ample.finish.max()


# --------------------------------------------------------------------------- invariants


def check_invariants(arrival, prompt, output, cfg: SchedulerConfig, costs: StepCosts):
    res = _run(arrival, prompt, output, cfg, costs)
    s = res.steps()
    end = s["start"] + s["duration"]
    served = res.finish >= 0
    rejected = ~served

    # per request
    assert (res.first_token[rejected] == -1.0).all()
    assert (res.first_token[served] >= arrival[served]).all()
    assert (res.finish[served] >= res.first_token[served]).all()
    if costs.overhead > 1e-9:  # every step takes a resolvable time
        assert (res.first_token[served] > arrival[served]).all(), "token before arrival"
        same = (res.finish == res.first_token) & served
        assert (same[served & (output == 1)]).all()
        # with output_lag a first token is delivered with the next step, which may be the last
        assert not (same & (output > (2 if cfg.output_lag else 1))).any()
    assert (res.preemptions >= 0).all()
    # every time is the end of some step
    for t in np.concatenate([res.first_token[served], res.finish[served]]):
        assert np.isclose(end, t, rtol=RTOL, atol=ATOL).any()

    # per step: limits of the scheduler
    n_tok = s["n_prefill_tokens"] + s["n_decode"]
    assert (n_tok >= 1).all() and (n_tok <= cfg.budget).all()
    assert (s["n_samp"] <= cfg.max_num_seqs).all()
    assert (s["n_decode"] <= s["n_samp"]).all()
    assert (res.rec_blocks >= 1).all() and (res.rec_blocks <= cfg.num_blocks).all()
    assert (s["duration"] >= 0).all()
    assert (s["start"][1:] >= end[:-1] - 1e-9 * np.abs(end[:-1])).all(), "steps overlap"
    host = costs.overhead + costs.host_seq * s["n_sched"]
    gpu = (
        costs.tok_table[n_tok]
        + costs.seq_table[s["n_samp"]]
        + costs.c_attn * s["work"]
        + costs.c_ctx * s["ctx"]
    )
    # a step that does not replay a whole CUDA graph cannot beat its launch floor
    graphed = (s["n_prefill_tokens"] == 0) & (s["n_decode"] <= costs.graph_max_seqs)
    floor = np.where(n_tok <= costs.piecewise_tokens, costs.piecewise_floor, costs.eager_floor)
    dur = host + np.where(graphed, gpu, np.maximum(gpu, floor))
    assert (s["n_sched"] >= np.maximum(s["n_samp"], 1)).all()
    assert (s["n_sched"] <= cfg.max_num_seqs).all()
    assert (s["n_sched"] <= n_tok).all()
    assert _close(s["duration"], dur)
    if not cfg.chunked:
        both = (s["n_prefill_tokens"] > 0) & (s["n_decode"] > 0)
        assert not both.any(), "non-chunked step mixes prefill and decode"

    # tokens: every served request emits exactly `output` tokens, one per sampling step
    orc = simulate(arrival, prompt, output, cfg, costs)
    assert [t for t, ok in zip(orc.tokens, served, strict=True) if ok] == list(output[served])
    assert s["n_samp"].sum() == sum(orc.tokens)
    assert res.gap_hist.sum() == sum(max(t - 1, 0) for t in orc.tokens)
    assert max(orc.n_running, default=0) <= cfg.max_num_seqs
    if rejected.sum() == 0:
        assert s["n_samp"].sum() == output.sum()
        assert res.gap_hist.sum() == (output - 1).sum()
    if res.preemptions.sum() == 0:
        # no recomputation: prompts prefilled once, each later token one decode
        assert s["n_prefill_tokens"].sum() == prompt[served].sum()
        assert s["n_decode"].sum() == (output[served] - 1).sum()
        assert _close(s["work"].sum(), (prompt[served] * (prompt[served] + 1) / 2).sum())
        # running (between first token and finish) never exceeds max_num_seqs
        fin = np.where(served, res.finish, -np.inf)
        live = [
            int(((res.first_token <= t) & (t < fin) & served).sum())
            for t in s["start"][s["duration"] > 0]
        ]
        assert max(live, default=0) <= cfg.max_num_seqs
    else:
        assert s["n_prefill_tokens"].sum() > prompt[served].sum() or rejected.any()
    return res


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_invariants_random_traces(case):
    check_invariants(*case)


# --------------------------------------------------------------------------- prefix cache


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases(max_requests=30), st.data())
def test_prefix_cache_invariants(case, data):
    """With shared prefixes: blocks in use never exceed the capacity, cached tokens are whole
    blocks below the prompt length, a request whose KV fits is served, and a hit never delays the prefill work: total prefill tokens = prompt tokens
    (+ recomputes) - cached tokens."""
    from test_kernel_vs_oracle import shared_prefix_keys

    arrival, prompt, output, cfg, costs = case
    if cfg.window_blocks:
        cfg = SchedulerConfig(**{**cfg.__dict__, "window_blocks": 0, "full_kv_fraction": 1.0})
    keys = data.draw(shared_prefix_keys(prompt, cfg.block_size), label="keys")
    res = run_stream(arrival, prompt, output, cfg, costs, block_keys=keys)
    plain = run_stream(arrival, prompt, output, cfg, costs)
    assert (res.rec_blocks <= cfg.num_blocks).all() and (res.rec_blocks >= 0).all()
    assert (res.cached % cfg.block_size == 0).all() and (res.cached >= 0).all()
    assert (res.cached <= prompt - 1).all()
    # a request whose whole KV fits is always served (rule 3 ignores hits), with or without
    fits = -(-(prompt + output) // cfg.block_size) <= cfg.num_blocks - cfg.watermark
    if cfg.chunked:
        assert (res.finish[fits] >= 0).all() and (plain.finish[fits] >= 0).all()
    if res.preemptions.sum() == 0:
        served = res.finish >= 0
        pf = int(np.sum(res.rec_count * res.rec_pf_tok))
        assert pf == int(prompt[served].sum() - res.cached[served].sum())

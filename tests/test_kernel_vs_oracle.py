"""The Numba batching kernel (with event skipping) against the step-by-step oracle.

Both implement docs/scheduler.md; every per-request time, every step and every inter-token gap
must agree.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import OracleResult, simulate

from apex_fast.sim.stream import (
    GAP_BINS,
    SchedulerConfig,
    StepCosts,
    StreamResult,
    gap_bin_edges,
    run_stream,
)

RTOL = 1e-9
ATOL = 1e-12
GAP_EPS = 1e-9  # relative rounding slack of a gap at a bin edge


# --------------------------------------------------------------------------- helpers


def make_costs(
    budget: int,
    max_num_seqs: int,
    tok_inc=None,
    seq_inc=None,
    c_attn: float = 1e-7,
    c_ctx: float = 1e-6,
    overhead: float = 2e-3,
    eager_floor: float = 0.0,
    host_seq: float = 0.0,
    graph_max_seqs: int = 1 << 62,
    piecewise_tokens: int = 0,
    piecewise_floor: float = 0.0,
) -> StepCosts:
    """Increasing tables tok_table[0] = seq_table[0] = 0 (+ the given increments)."""
    if tok_inc is None:
        tok_inc = np.full(budget, 1e-5)
    if seq_inc is None:
        seq_inc = np.full(max_num_seqs, 1e-4)
    tok = np.concatenate([[0.0], np.cumsum(np.asarray(tok_inc, np.float64))])
    seq = np.concatenate([[0.0], np.cumsum(np.asarray(seq_inc, np.float64))])
    assert tok.size >= budget + 1 and seq.size >= max_num_seqs + 1
    return StepCosts(
        tok,
        seq,
        float(c_attn),
        float(c_ctx),
        float(overhead),
        float(eager_floor),
        float(host_seq),
        int(graph_max_seqs),
        int(piecewise_tokens),
        float(piecewise_floor),
    )


def oracle_hist(gaps: list[float]) -> np.ndarray:
    """Bin the oracle's gaps with the kernel's edges (bin i = [edges[i], edges[i+1]), gaps <= 0
    and below the first edge in bin 0, above the last edge in the last bin)."""
    edges = gap_bin_edges()
    assert edges.size == GAP_BINS + 1
    g = np.asarray(gaps, np.float64)
    b = np.searchsorted(edges, g, side="right") - 1
    b = np.clip(b, 0, GAP_BINS - 1)
    return np.bincount(b, minlength=GAP_BINS).astype(np.int64)


def assert_same(res: StreamResult, orc: OracleResult, label: str = "") -> None:
    """Kernel result == oracle result (docs/scheduler.md), with float tolerances."""
    msg = f"{label}: " if label else ""
    # per request
    ft = np.asarray(orc.first_token)
    fi = np.asarray(orc.finish)
    np.testing.assert_allclose(res.first_token, ft, rtol=RTOL, atol=ATOL, err_msg=msg + "first")
    np.testing.assert_allclose(res.finish, fi, rtol=RTOL, atol=ATOL, err_msg=msg + "finish")
    np.testing.assert_array_equal(res.preemptions, orc.preemptions, err_msg=msg + "preemptions")
    # per step
    assert (res.rec_count >= 1).all(), msg + "empty record"
    st_ = res.steps()
    assert res.num_steps == orc.num_steps, f"{msg}steps {res.num_steps} != {orc.num_steps}"
    for key in ("start", "duration", "work"):
        np.testing.assert_allclose(
            st_[key], np.asarray(orc_col(orc, key)), rtol=RTOL, atol=ATOL, err_msg=msg + key
        )
    for key in ("n_prefill_tokens", "n_decode", "n_samp", "ctx", "n_sched"):
        np.testing.assert_array_equal(st_[key], orc_col(orc, key), err_msg=msg + key)
    # blocks in use after the allocations of each record's last step
    last = np.cumsum(res.rec_count) - 1
    used = np.asarray(orc.blocks_used, np.int64)
    np.testing.assert_array_equal(res.rec_blocks, used[last], err_msg=msg + "rec_blocks")
    # gap histogram
    horizon = max([abs(t) for t in orc.finish] + [abs(orc.start[-1])] if orc.start else [0.0])
    assert_same_hist(res.gap_hist, orc.gaps, msg, horizon)


def assert_same_hist(
    hist: np.ndarray, gaps: list[float], msg: str = "", horizon: float = 0.0
) -> None:
    """The kernel's histogram holds exactly the oracle's gaps, each binned with the kernel's
    edges up to float rounding: a gap within `tol` of an edge may fall on either side of it.
    Equivalently, for every interior edge e the number of kernel gaps below e lies between the
    oracle counts below e - tol and up to e + tol. A gap is a difference of clock values up to
    `horizon`, so tol = GAP_EPS*e + a few ulps of the horizon."""
    assert hist.shape == (GAP_BINS,)
    assert int(hist.sum()) == len(gaps), f"{msg}gap count {int(hist.sum())} != {len(gaps)}"
    g = np.sort(np.asarray(gaps, np.float64))
    inner = gap_bin_edges()[1:-1]
    below = np.cumsum(hist)[:-1]  # kernel gaps in bins < i+1, i.e. below inner[i]
    tol = GAP_EPS * inner + 8 * np.finfo(np.float64).eps * horizon
    lo = np.searchsorted(g, inner - tol, side="left")
    hi = np.searchsorted(g, inner + tol, side="right")
    bad = np.flatnonzero((below < lo) | (below > hi))
    assert bad.size == 0, (
        f"{msg}gap histogram differs at edges {inner[bad[:5]]}: kernel below {below[bad[:5]]}, "
        f"oracle between {lo[bad[:5]]} and {hi[bad[:5]]}"
    )


def orc_col(orc: OracleResult, key: str):
    return getattr(orc, key)


def run_both(
    arrival, prompt, output, cfg: SchedulerConfig, costs: StepCosts, prefix=None, conc=0, keys=None
):
    arrival = np.asarray(arrival, np.float64)
    prompt = np.asarray(prompt, np.int64)
    output = np.asarray(output, np.int64)
    kw = {} if keys is None else {"block_keys": keys}
    if prefix is None:
        res = run_stream(arrival, prompt, output, cfg, costs, max_concurrency=conc, **kw)
    else:
        prefix = np.asarray(prefix, np.int64)
        res = run_stream(
            arrival, prompt, output, cfg, costs, prefix=prefix, max_concurrency=conc, **kw
        )
    orc = simulate(
        arrival, prompt, output, cfg, costs, prefix=prefix, max_concurrency=conc, block_keys=keys
    )
    return res, orc


def check(arrival, prompt, output, cfg, costs, label="", prefix=None, conc=0, keys=None):
    res, orc = run_both(arrival, prompt, output, cfg, costs, prefix, conc, keys)
    assert_same(res, orc, label)
    np.testing.assert_allclose(res.arrival, orc.entry, rtol=RTOL, atol=ATOL, err_msg="entry")
    np.testing.assert_array_equal(res.cached, orc.cached, err_msg=label + " cached tokens")
    return res, orc


# --------------------------------------------------------------------------- strategies


@st.composite
def traces(draw, max_requests: int = 40):
    n = draw(st.integers(1, max_requests))
    gap = st.one_of(st.just(0.0), st.floats(1e-4, 0.5), st.floats(0.5, 5.0))
    gaps = draw(st.lists(gap, min_size=n, max_size=n))
    start = draw(st.sampled_from([0.0, 0.0, 0.37, 12.5]))
    arrival = np.cumsum(np.asarray(gaps)) + start
    prompt = draw(
        st.lists(st.one_of(st.integers(1, 40), st.integers(1, 300)), min_size=n, max_size=n)
    )
    output = draw(
        st.lists(st.one_of(st.integers(1, 20), st.integers(1, 200)), min_size=n, max_size=n)
    )
    return arrival, np.asarray(prompt, np.int64), np.asarray(output, np.int64)


@st.composite
def configs(draw, prompt, output):
    bs = draw(st.sampled_from([1, 4, 16]))
    chunked = draw(st.booleans())
    max_num_seqs = draw(st.integers(1, 16))
    longest = max(8, min(512, int(max(prompt))))
    budget = draw(st.one_of(st.integers(8, 64), st.integers(8, 512), st.integers(longest, 512)))
    # KV capacity relative to the largest request: tiny (rejections), tight (preemptions and
    # recompute) or ample
    big = max(-(-(int(p) + int(o)) // bs) for p, o in zip(prompt, output, strict=True))
    need = max(-(-int(p) // bs) for p in prompt)
    total = sum(-(-(int(p) + int(o)) // bs) for p, o in zip(prompt, output, strict=True))
    num_blocks = draw(
        st.one_of(
            st.integers(1, max(1, big)),
            st.integers(need, max(need, big) + 2),
            st.integers(big, big + 8),
            st.integers(big, max(big, total) + 8),
        )
    )
    watermark = draw(st.sampled_from([0, 0, 1, 2, num_blocks // 100]))
    return SchedulerConfig(
        num_blocks=num_blocks,
        block_size=bs,
        watermark=watermark,
        max_num_seqs=max_num_seqs,
        budget=budget,
        chunked=chunked,
        output_lag=draw(st.booleans()),
        **draw(windows()),
    )


def windows():
    """Sliding-window KV: none (most cases), or a window of a few blocks with the full-attention
    layers holding all (1.0), half (gpt-oss), 10/62 (Gemma-3) or none (Mistral-7B) of the KV."""
    return st.one_of(
        st.just({}),
        st.just({}),
        st.fixed_dictionaries(
            {
                "window_blocks": st.integers(1, 6),
                "full_kv_fraction": st.sampled_from([1.0, 0.5, 10 / 62, 0.0]),
            }
        ),
    )


def _nonneg(scale: float):
    return st.one_of(st.just(0.0), st.floats(0.0, scale), st.floats(scale / 100, scale))


@st.composite
def step_costs(draw, cfg: SchedulerConfig):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["random", "random", "linear", "zero_tables"]))
    if kind == "random":
        tok_inc = rng.exponential(draw(_nonneg(1e-4)), cfg.budget)
        seq_inc = rng.exponential(draw(_nonneg(1e-3)), cfg.max_num_seqs)
    elif kind == "linear":
        tok_inc = np.full(cfg.budget, draw(_nonneg(1e-4)))
        seq_inc = np.full(cfg.max_num_seqs, draw(_nonneg(1e-3)))
    else:
        tok_inc = np.zeros(cfg.budget)
        seq_inc = np.zeros(cfg.max_num_seqs)
    return make_costs(
        cfg.budget,
        cfg.max_num_seqs,
        tok_inc,
        seq_inc,
        c_attn=draw(_nonneg(1e-7)),
        c_ctx=draw(_nonneg(1e-5)),
        overhead=draw(_nonneg(5e-3)),
        eager_floor=draw(st.one_of(st.just(0.0), _nonneg(2e-2))),
        host_seq=draw(st.one_of(st.just(0.0), _nonneg(5e-4))),
        graph_max_seqs=draw(st.one_of(st.just(1 << 62), st.integers(0, 8))),
        piecewise_tokens=draw(st.one_of(st.just(0), st.integers(1, 64))),
        piecewise_floor=draw(st.one_of(st.just(0.0), _nonneg(1e-2))),
    )


@st.composite
def cases(draw, max_requests: int = 40):
    arrival, prompt, output = draw(traces(max_requests))
    cfg = draw(configs(prompt, output))
    costs = draw(step_costs(cfg))
    return arrival, prompt, output, cfg, costs


# --------------------------------------------------------------------------- property tests


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_kernel_matches_oracle(case):
    check(*case)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases(max_requests=20), st.data())
def test_kernel_matches_oracle_with_prefix(case, data):
    """run_stream's `prefix`: KV present at admission (e.g. cross-attention KV), no compute."""
    arrival, prompt, output, cfg, costs = case
    n = arrival.size
    prefix = data.draw(
        st.lists(st.one_of(st.just(0), st.integers(0, 200)), min_size=n, max_size=n),
        label="prefix",
    )
    check(arrival, prompt, output, cfg, costs, prefix=prefix)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases(max_requests=30), st.data())
def test_kernel_matches_oracle_closed_loop(case, data):
    """Concurrency limit (vLLM bench --max-concurrency): entry times depend on completions."""
    arrival, prompt, output, cfg, costs = case
    conc = data.draw(st.integers(1, arrival.size + 1), label="max_concurrency")
    res, orc = check(arrival, prompt, output, cfg, costs, conc=conc)
    entry = np.asarray(orc.entry)
    assert (entry >= arrival).all()
    # never more than `conc` requests between entry and finish (rejected ones hold a slot
    # until their rejection, which is not recorded: check served requests only)
    served = np.asarray(orc.finish) >= 0
    ev = sorted(
        [(t, 1) for t in entry[served]] + [(t, -1) for t in np.asarray(orc.finish)[served]],
        key=lambda x: (x[0], x[1]),
    )
    inside = np.cumsum([d for _, d in ev]) if ev else np.zeros(1)
    assert inside.max() <= conc


@st.composite
def kv_pressure_cases(draw):
    """Few blocks, long outputs, budgets that never reject: preemption and recompute dominate."""
    arrival, prompt, output = draw(traces(max_requests=12))
    bs = draw(st.sampled_from([1, 4, 16]))
    big = max(-(-(int(p) + int(o)) // bs) for p, o in zip(prompt, output, strict=True))
    need = max(-(-int(p) // bs) for p in prompt)
    cfg = SchedulerConfig(
        num_blocks=draw(st.integers(need, max(need, big) + 2)),
        block_size=bs,
        watermark=0,
        max_num_seqs=draw(st.integers(2, 16)),
        budget=draw(st.integers(int(prompt.max() + output.max()), 512)),
        chunked=draw(st.booleans()),
        output_lag=draw(st.booleans()),
        **draw(windows()),
    )
    return arrival, prompt, output, cfg, draw(step_costs(cfg))


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(kv_pressure_cases())
def test_kernel_matches_oracle_under_kv_pressure(case):
    check(*case)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(kv_pressure_cases(), st.data())
def test_kernel_matches_oracle_closed_loop_under_kv_pressure(case, data):
    """Concurrency slots freed by finishes while preemption and recompute churn the batch."""
    arrival = case[0]
    conc = data.draw(st.integers(1, max(1, arrival.size - 1)), label="max_concurrency")
    check(*case, conc=conc)


# --------------------------------------------------------------------------- hand cases

COSTS8 = dict(c_attn=1e-7, c_ctx=1e-6, overhead=2e-3)


def _cfg(**kw) -> SchedulerConfig:
    base = dict(num_blocks=1000, block_size=16, watermark=0, max_num_seqs=8, budget=512)
    base.update(kw)
    return SchedulerConfig(**base)


@pytest.mark.parametrize("chunked", [False, True])
def test_single_request(chunked):
    cfg = _cfg(chunked=chunked)
    check([0.5], [100], [50], cfg, make_costs(cfg.budget, cfg.max_num_seqs, **COSTS8))


@pytest.mark.parametrize("lag", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_simultaneous_arrivals(chunked, lag):
    cfg = _cfg(chunked=chunked, budget=256, max_num_seqs=3, output_lag=lag)
    check(
        [0.0] * 6 + [0.01] * 3,
        [100, 200, 50, 256, 1, 17, 90, 90, 90],
        [10, 1, 30, 5, 60, 2, 7, 8, 9],
        cfg,
        make_costs(cfg.budget, cfg.max_num_seqs, **COSTS8),
    )


@pytest.mark.parametrize("lag", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_preemption_and_recompute(chunked, lag):
    # 6 blocks of 4 tokens: two requests of prompt 8 fill 4 blocks, their decodes collide
    cfg = _cfg(chunked=chunked, num_blocks=6, block_size=4, budget=64, output_lag=lag)
    res, orc = check(
        [0.0, 0.0, 0.0],
        [8, 8, 5],
        [12, 12, 3],
        cfg,
        make_costs(cfg.budget, cfg.max_num_seqs, eager_floor=5e-3, **COSTS8),
    )
    assert sum(orc.preemptions) > 0


@pytest.mark.parametrize("chunked", [False, True])
def test_rejections(chunked):
    # 10 blocks of 16 tokens, watermark 1: prompts over 144 tokens never fit; not chunked also
    # rejects prompts over the 128-token budget
    cfg = _cfg(chunked=chunked, num_blocks=10, watermark=1, budget=128)
    res, orc = check(
        [0.0, 0.1, 0.2, 0.3],
        [145, 144, 129, 20],
        [3, 3, 3, 3],
        cfg,
        make_costs(cfg.budget, cfg.max_num_seqs, **COSTS8),
    )
    assert res.first_token[0] == -1.0 and res.finish[0] == -1.0
    assert (res.first_token[2] == -1.0) == (not chunked)
    assert res.finish[3] > 0


def test_chunked_long_prompt_with_decodes():
    cfg = _cfg(chunked=True, budget=64, max_num_seqs=4)
    check(
        [0.0, 0.0, 0.05, 0.06],
        [30, 1000, 70, 3],
        [80, 5, 40, 100],
        cfg,
        make_costs(cfg.budget, cfg.max_num_seqs, **COSTS8),
    )


def test_max_num_seqs_one():
    for chunked in (False, True):
        cfg = _cfg(chunked=chunked, max_num_seqs=1, budget=32)
        check(
            [0.0, 0.0, 0.001],
            [5, 32, 7],
            [4, 3, 9],
            cfg,
            make_costs(cfg.budget, cfg.max_num_seqs, **COSTS8),
        )


def test_zero_costs():
    """All durations zero: every event happens at the arrival instants."""
    for chunked in (False, True):
        cfg = _cfg(chunked=chunked, num_blocks=12, block_size=4, budget=16, max_num_seqs=4)
        costs = make_costs(cfg.budget, cfg.max_num_seqs, np.zeros(16), np.zeros(4), 0.0, 0.0, 0.0)
        res, _ = check([0.0, 0.0, 1.0, 1.0], [10, 3, 16, 2], [7, 9, 4, 20], cfg, costs)
        served = res.finish >= 0
        assert np.all(res.finish[served] == np.asarray([0.0, 0.0, 1.0, 1.0])[served])


def test_event_skipping_until_arrival():
    """Long decode runs broken by an arrival: the kernel's skipped records end exactly there."""
    cfg = _cfg(chunked=True, budget=256, max_num_seqs=4)
    res, orc = check(
        [0.0, 0.0, 0.2137, 0.9],
        [50, 60, 70, 10],
        [150, 200, 100, 100],
        cfg,
        make_costs(cfg.budget, cfg.max_num_seqs, **COSTS8),
    )
    assert res.rec_count.max() > 1  # event skipping really happened
    assert res.rec_count.size < orc.num_steps


def test_event_skipping_with_blocked_head():
    """A waiting head blocked by max_num_seqs while the running batch decodes."""
    for chunked in (False, True):
        cfg = _cfg(chunked=chunked, budget=256, max_num_seqs=2)
        res, _ = check(
            [0.0, 0.0, 0.0, 0.01, 0.02],
            [40, 40, 40, 8, 8],
            [120, 60, 30, 40, 5],
            cfg,
            make_costs(cfg.budget, cfg.max_num_seqs, **COSTS8),
        )
        assert res.rec_count.max() > 1


@pytest.mark.parametrize("lag", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_lone_sequence_fills_kv(chunked, lag):
    """A lone sequence whose context outgrows the KV cache preempts itself and is then
    rejected (its recompute no longer fits); the request queued behind it is served."""
    cfg = _cfg(chunked=chunked, num_blocks=3, block_size=4, budget=64, output_lag=lag)
    res, orc = check(
        [0.0, 5.0], [6, 3], [20, 2], cfg, make_costs(cfg.budget, cfg.max_num_seqs, **COSTS8)
    )
    assert orc.rejected == [True, False]


@pytest.mark.parametrize("lag", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_rejected_right_after_first_token(chunked, lag):
    """Rejected while its first token is still to be delivered (output_lag): still -1."""
    cfg = _cfg(chunked=chunked, num_blocks=1, block_size=1, max_num_seqs=1, budget=8)
    cfg = SchedulerConfig(**{**cfg.__dict__, "output_lag": lag})
    res, orc = check([0.0, 0.0], [1, 1], [2, 1], cfg, make_costs(8, 1, **COSTS8))
    assert orc.rejected == [True, False]
    assert orc.first_token[0] == -1.0


@pytest.mark.parametrize("lag", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
def test_closed_loop_one_client_is_sequential(chunked, lag):
    """max_concurrency 1: each request enters when the previous one finishes and is served
    alone, so every request lasts exactly as long as it does on an empty engine."""
    cfg = _cfg(chunked=chunked, output_lag=lag)
    costs = make_costs(cfg.budget, cfg.max_num_seqs, **COSTS8)
    prompt, output = [100, 30, 400, 5], [20, 1, 9, 64]
    res, orc = check([0.0] * 4, prompt, output, cfg, costs, conc=1)
    np.testing.assert_allclose(res.arrival[1:], res.finish[:-1], rtol=1e-12)
    for i in range(4):
        alone = run_stream(np.zeros(1), np.array([prompt[i]]), np.array([output[i]]), cfg, costs)
        assert math.isclose(
            res.finish[i] - res.arrival[i], alone.finish[0], rel_tol=1e-9, abs_tol=1e-12
        )
        assert math.isclose(
            res.first_token[i] - res.arrival[i], alone.first_token[0], rel_tol=1e-9, abs_tol=1e-12
        )


def test_closed_loop_event_skipping_still_happens():
    """All requests at t=0 behind 4 slots: decode runs are still skipped in blocks."""
    cfg = _cfg(chunked=True, budget=256, max_num_seqs=8)
    res, orc = check(
        [0.0] * 12, [40] * 12, [50, 80, 120] * 4, cfg,
        make_costs(cfg.budget, cfg.max_num_seqs, **COSTS8), conc=4,
    )  # fmt: skip
    assert res.rec_count.max() > 1
    assert res.rec_count.size < orc.num_steps // 4


def test_empty_trace():
    cfg = _cfg()
    res = run_stream(
        np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64), cfg, make_costs(512, 8)
    )
    orc = simulate([], [], [], cfg, make_costs(512, 8))
    assert res.num_steps == 0 == orc.num_steps
    assert res.gap_hist.sum() == 0


def test_oracle_hist_binning_matches_kernel_edges():
    """Sanity of the test's own binning: values well inside bins land where log10 says."""
    edges = gap_bin_edges()
    mids = np.sqrt(edges[:-1] * edges[1:])
    h = oracle_hist(list(mids))
    assert (h == 1).all()
    assert oracle_hist([0.0, -1.0, 1e-12])[0] == 3
    assert oracle_hist([1e9])[-1] == 1
    assert math.isclose(edges[0], 1e-7) and math.isclose(edges[-1], 1e4)


@pytest.mark.parametrize("chunked", [False, True])
def test_sliding_window_caps_blocks_of_a_long_sequence(chunked):
    """One request of 40 + 200 tokens, block size 4, 20 blocks: with every layer full it
    outgrows the cache and is rejected; when all layers slide over a 3-block window
    (full_kv_fraction 0) it holds at most 3 blocks and finishes; with half the KV in full
    layers it needs ceil(0.5 * 60 + 0.5 * 3) = 32 blocks at the end and is rejected again."""
    arrival, prompt, output = np.zeros(1), np.array([40]), np.array([200])
    costs = make_costs(512, 8, np.full(512, 1e-5), np.full(8, 1e-4), **COSTS8)
    base = dict(num_blocks=20, block_size=4, budget=512, chunked=chunked)
    full, _ = check(arrival, prompt, output, _cfg(**base), costs)
    slide, _ = check(
        arrival, prompt, output, _cfg(**base, window_blocks=3, full_kv_fraction=0), costs
    )
    half, _ = check(
        arrival, prompt, output, _cfg(**base, window_blocks=3, full_kv_fraction=0.5), costs
    )
    assert full.finish[0] < 0 and half.finish[0] < 0
    assert slide.finish[0] > 0 and slide.rec_blocks.max() == 3


# --------------------------------------------------------------------------- prefix caching


@st.composite
def shared_prefix_keys(draw, prompt, bs: int):
    """Block keys with shared prefixes: request i belongs to one of a few groups (documents,
    conversations) and shares the first s_i blocks of its group's chain; its other hashed
    blocks are its own. Some requests hash fewer blocks than they have (a short hash list)."""
    groups = draw(st.integers(1, 4))
    keys: list[int] = []
    off = [0]
    for i, p in enumerate(prompt):
        full = int(p) // bs
        nk = draw(st.one_of(st.just(full), st.integers(0, full)))
        g = draw(st.integers(0, groups - 1))
        s = draw(st.one_of(st.just(nk), st.integers(0, nk)))
        keys += [g * 100_000 + j for j in range(s)]
        keys += [(i + 1) * 10_000_000 + j for j in range(s, nk)]
        off.append(len(keys))
    return np.asarray(keys, np.int64), np.asarray(off, np.int64)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases(max_requests=30), st.data())
def test_kernel_matches_oracle_with_prefix_cache(case, data):
    """Prefix caching: hits, touches of free cached blocks, LRU eviction, shared blocks."""
    arrival, prompt, output, cfg, costs = case
    if cfg.window_blocks:  # the stream layer does not cache with sliding windows
        cfg = SchedulerConfig(**{**cfg.__dict__, "window_blocks": 0, "full_kv_fraction": 1.0})
    keys = data.draw(shared_prefix_keys(prompt, cfg.block_size), label="keys")
    conc = data.draw(st.one_of(st.just(0), st.integers(1, arrival.size + 1)), label="conc")
    res, orc = check(arrival, prompt, output, cfg, costs, conc=conc, keys=keys)
    _prefix_cache_invariants(res, orc, prompt, cfg)


@st.composite
def repeated_prompt_cases(draw):
    """Few requests of a few repeated prompts under KV pressure: evictions and preemptions."""
    arrival, prompt, output = draw(traces(max_requests=14))
    bs = draw(st.sampled_from([1, 4, 16]))
    kinds = draw(st.integers(1, 3))
    kind = [draw(st.integers(0, kinds - 1)) for _ in range(prompt.size)]
    base = [int(prompt[i % prompt.size]) for i in range(kinds)]
    prompt = np.asarray([base[k] for k in kind], np.int64)
    keys: list[int] = []
    off = [0]
    for k, p in zip(kind, prompt, strict=True):
        keys += [k * 1000 + j for j in range(int(p) // bs)]
        off.append(len(keys))
    big = max(-(-(int(p) + int(o)) // bs) for p, o in zip(prompt, output, strict=True))
    need = max(-(-int(p) // bs) for p in prompt)
    cfg = SchedulerConfig(
        num_blocks=draw(st.integers(need, max(need, big) + 6)),
        block_size=bs,
        watermark=draw(st.sampled_from([0, 0, 1])),
        max_num_seqs=draw(st.integers(1, 8)),
        budget=draw(st.integers(int(prompt.max() + output.max()), 512)),
        chunked=draw(st.booleans()),
        output_lag=draw(st.booleans()),
    )
    keys_ = (np.asarray(keys, np.int64), np.asarray(off, np.int64))
    return arrival, prompt, output, cfg, draw(step_costs(cfg)), keys_


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(repeated_prompt_cases())
def test_kernel_matches_oracle_prefix_cache_under_kv_pressure(case):
    arrival, prompt, output, cfg, costs, keys = case
    res, orc = check(arrival, prompt, output, cfg, costs, keys=keys)
    _prefix_cache_invariants(res, orc, prompt, cfg)


def _prefix_cache_invariants(res, orc, prompt, cfg) -> None:
    """Cached tokens are whole blocks and leave at least the last prompt token to compute;
    referenced blocks plus free blocks still holding a key never exceed the capacity."""
    cached = np.asarray(res.cached)
    assert (cached >= 0).all() and (cached % cfg.block_size == 0).all()
    assert (cached <= np.asarray(prompt) - 1).all()
    used = np.asarray(orc.blocks_after)
    cached_free = np.asarray(orc.cached_free)
    assert (used + cached_free <= cfg.num_blocks).all()
    assert (np.asarray(orc.blocks_used) <= cfg.num_blocks).all()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases(max_requests=30), st.data())
def test_prefix_cache_without_shared_prefixes_is_bit_identical(case, data):
    """Unique keys (no request shares a block with another) or none at all: the kernel with
    prefix caching gives exactly the results without it, to the last bit. (A preempted request
    finds its own freed blocks when it is recomputed, as in vLLM V1: with unique keys that is
    the only possible hit, so runs with preemptions may differ and are checked without keys.)"""
    arrival, prompt, output, cfg, costs = case
    if cfg.window_blocks:
        cfg = SchedulerConfig(**{**cfg.__dict__, "window_blocks": 0, "full_kv_fraction": 1.0})
    bs = cfg.block_size
    off = np.concatenate([[0], np.cumsum(prompt // bs)]).astype(np.int64)
    keys = np.arange(off[-1], dtype=np.int64) * 7 + 3
    conc = data.draw(st.one_of(st.just(0), st.integers(1, arrival.size + 1)), label="conc")
    a = run_stream(arrival, prompt, output, cfg, costs, max_concurrency=conc)
    variants = [{"block_keys": (keys[:0], off * 0)}]
    if a.preemptions.sum() == 0:
        variants.append({"block_keys": (keys, off)})
    for kw in variants:
        b = run_stream(arrival, prompt, output, cfg, costs, max_concurrency=conc, **kw)
        for name, x in a.__dict__.items():
            if isinstance(x, np.ndarray):
                np.testing.assert_array_equal(x, getattr(b, name), err_msg=name)
        assert (b.cached == 0).all()


def test_prefix_cache_hit_skips_prefill_compute_but_not_attention():
    """Two requests with the same 64-token prompt (block 16), the second after the first has
    finished: it finds 3 blocks cached (48 tokens: the last token is always computed, so the
    fourth block is not a hit), computes 16 tokens, and its prefill attends to all 64 keys."""
    cfg = _cfg(chunked=True, budget=256)
    costs = make_costs(cfg.budget, cfg.max_num_seqs, **COSTS8)
    keys = (np.array([1, 2, 3, 4, 1, 2, 3, 4]), np.array([0, 4, 8]))
    res, orc = check([0.0, 5.0], [64, 64], [3, 3], cfg, costs, keys=keys)
    assert list(res.cached) == [0, 48]
    st_ = res.steps()
    pf = st_["n_prefill_tokens"] > 0
    assert list(st_["n_prefill_tokens"][pf]) == [64, 16]
    # causal pairs of the second prefill: 16 queries after 48 cached keys
    assert math.isclose(st_["work"][pf][1], 16 * (48 + 17 / 2), rel_tol=1e-12)
    off_res = run_stream(np.array([0.0, 5.0]), np.array([64, 64]), np.array([3, 3]), cfg, costs)
    ttft = res.first_token - np.array([0.0, 5.0])
    ttft_off = off_res.first_token - np.array([0.0, 5.0])
    assert ttft[1] < ttft_off[1] and ttft[0] == ttft_off[0]


def test_prefix_cache_lru_evicts_the_oldest_free_blocks_first():
    """3 blocks of 4 tokens. A (keys 1,2) runs and frees; B (keys 3,4) runs and frees, taking
    the two never-used blocks first and then A's last block... the free queue decides: after
    B, A's first block is still cached, so C = A's prompt hits it (vLLM V1 free-queue order,
    a request's blocks freed last first)."""
    cfg = _cfg(chunked=True, num_blocks=4, block_size=4, budget=64)
    costs = make_costs(cfg.budget, cfg.max_num_seqs, **COSTS8)
    keys = (np.array([1, 2, 3, 4, 1, 2]), np.array([0, 2, 4, 6]))
    res, orc = check([0.0, 1.0, 2.0], [9, 9, 9], [1, 1, 1], cfg, costs, keys=keys)
    # A holds 3 blocks (0,1,2), frees 2,1,0 -> queue [3, 2, 1, 0]; B takes 3,2,1: A's key 2
    # (block 1) is evicted, key 1 (block 0) survives; C hits one block
    assert list(res.cached) == [0, 0, 4]

"""The kernel's lazy decode set (docs/scheduler.md, "Lazy decode set"; kernels/decode.py) against
the oracle: decoding sequences advanced as one set (a global step counter, a finish heap, block
slots per attention copy), written back when a step may preempt or run out of budget.

`lazy_min_running` = 1 builds the set from the first decode-only step, so every random case of
the kernel-vs-oracle strategies runs through it; the hand cases keep a full batch with a waiting
queue, cross block boundaries, run the blocks short (preemption), split the KV over attention
copies and use every admission rule. The set changes nothing: every output array is also equal
bit for bit to a run without it (`lazy_min_running` = 0)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from apex_fast.kernels.params import ADMIT_NO_EVICT, ADMIT_PER_CHUNK, ADMIT_WHOLE_PROMPT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import simulate
from test_kernel_vs_oracle import (
    COSTS8,
    _cfg,
    assert_same,
    cases,
    check,
    kv_pressure_cases,
    make_costs,
)
from test_kv_copies_kernel import copy_cases

from apex_fast.sim.stream import SchedulerConfig, StreamResult, run_stream

SLOW = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
POLICIES = st.sampled_from([ADMIT_WHOLE_PROMPT, ADMIT_NO_EVICT, ADMIT_PER_CHUNK])


def _lazy(cfg: SchedulerConfig, lazy_min: int = 1, **kw) -> SchedulerConfig:
    return dataclasses.replace(cfg, lazy_min_running=lazy_min, **kw)


def assert_identical(a: StreamResult, b: StreamResult) -> None:
    """Every output array of the two runs equal bit for bit (records included)."""
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert np.array_equal(x, y), f.name
        else:
            assert x == y, f.name


def both_ways(arrival, prompt, output, cfg, costs, **kw) -> StreamResult:
    """The kernel with the lazy set from one running sequence, against the oracle and against
    the kernel without the set."""
    res = run_stream(arrival, prompt, output, _lazy(cfg), costs, **kw)
    orc = simulate(arrival, prompt, output, cfg, costs, **kw)
    assert_same(res, orc, "lazy set")
    np.testing.assert_array_equal(res.preemptions, orc.preemptions)
    assert_identical(res, run_stream(arrival, prompt, output, _lazy(cfg, 0), costs, **kw))
    return res


# --------------------------------------------------------------------------- random cases


@settings(max_examples=300, **SLOW)
@given(cases(), POLICIES, st.sampled_from([1, 2, 3]))
def test_lazy_set_matches_oracle(case, policy, lazy_min):
    arrival, prompt, output, cfg, costs = case
    check(arrival, prompt, output, _lazy(cfg, lazy_min, admission=policy), costs)


@settings(max_examples=200, **SLOW)
@given(kv_pressure_cases(), POLICIES, st.data())
def test_lazy_set_matches_oracle_under_kv_pressure(case, policy, data):
    """The set is built while blocks are plentiful and written back when they run short."""
    arrival, prompt, output, cfg, costs = case
    conc = data.draw(st.sampled_from([0, 0, 1, 3]), label="max_concurrency")
    check(arrival, prompt, output, _lazy(cfg, admission=policy), costs, conc=conc)


@settings(max_examples=200, **SLOW)
@given(copy_cases(), POLICIES, st.data())
def test_lazy_set_matches_oracle_with_copies(case, policy, data):
    """Block slots and block shortages are counted per attention copy."""
    arrival, prompt, output, cfg, costs, copy = case
    conc = data.draw(st.sampled_from([0, 0, 2]), label="max_concurrency")
    cfg = _lazy(cfg, admission=policy)
    res = run_stream(arrival, prompt, output, cfg, costs, max_concurrency=conc, copy=copy)
    orc = simulate(arrival, prompt, output, cfg, costs, max_concurrency=conc, copy=copy)
    assert_same(res, orc, f"copies={cfg.copies}")


@settings(max_examples=100, **SLOW)
@given(cases(max_requests=20), st.data())
def test_lazy_set_with_prefix_kv(case, data):
    """KV present at admission (encoder-decoder cross attention) counts in every context."""
    arrival, prompt, output, cfg, costs = case
    prefix = data.draw(
        st.lists(st.integers(0, 200), min_size=arrival.size, max_size=arrival.size),
        label="prefix",
    )
    check(arrival, prompt, output, _lazy(cfg), costs, prefix=prefix)


# --------------------------------------------------------------------------- saturated hand cases


def _saturated(n: int, seed: int, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Short prompts, long outputs, arrivals faster than the batch drains: the batch stays
    full with a waiting queue and a completion every few steps."""
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    return arrival - arrival[0], rng.integers(1, 40, n), rng.integers(20, 200, n)


@pytest.mark.parametrize("policy", [ADMIT_WHOLE_PROMPT, ADMIT_NO_EVICT, ADMIT_PER_CHUNK])
@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("lag", [False, True])
def test_full_batch_with_queue(policy, chunked, lag):
    """40 running sequences of blocks of 4 tokens with a queue behind them: the set crosses
    block boundaries in every run and its members finish one by one (each finish ends a run
    and the head of the queue is admitted in the next step)."""
    arrival, prompt, output = _saturated(160, 1, 400.0)
    cfg = _cfg(
        num_blocks=4000, block_size=4, max_num_seqs=40, budget=256, chunked=chunked,
        output_lag=lag, admission=policy,
    )  # fmt: skip
    res = both_ways(arrival, prompt, output, cfg, make_costs(256, 40, **COSTS8))
    # runs of several steps with the whole batch, and single steps (an admission)
    assert (res.rec_sched == 40).sum() > 50 and (res.rec_count > 1).sum() > 20
    assert int(res.preemptions.sum()) == 0


@pytest.mark.parametrize("policy", [ADMIT_WHOLE_PROMPT, ADMIT_PER_CHUNK])
@pytest.mark.parametrize("chunked", [False, True])
def test_full_batch_runs_out_of_blocks(policy, chunked):
    """The blocks suffice when the set is built and run short as its sequences grow: the step
    that would preempt writes the set back and preempts as before."""
    arrival, prompt, output = _saturated(120, 2, 400.0)
    cfg = _cfg(
        num_blocks=700, block_size=4, max_num_seqs=32, budget=256, chunked=chunked,
        admission=policy,
    )  # fmt: skip
    res = both_ways(arrival, prompt, output, cfg, make_costs(256, 32, **COSTS8))
    assert int(res.preemptions.sum()) > 0 and (res.rec_sched == 32).sum() > 20


@pytest.mark.parametrize("copies", [2, 4])
@pytest.mark.parametrize("policy", [ADMIT_WHOLE_PROMPT, ADMIT_NO_EVICT, ADMIT_PER_CHUNK])
def test_full_batch_over_attention_copies(copies, policy):
    """Requests dealt in turn to the copies: each copy's free blocks bound the run and one
    copy running short preempts in that copy only."""
    arrival, prompt, output = _saturated(120, 3, 400.0)
    n = arrival.size
    for blocks, preempts in ((4000, False), (200 * copies, True)):
        cfg = _cfg(
            num_blocks=blocks, block_size=4, max_num_seqs=32, budget=256, copies=copies,
            admission=policy,
        )  # fmt: skip
        res = both_ways(
            arrival, prompt, output, cfg, make_costs(256, 32, **COSTS8), copy=np.arange(n) % copies
        )
        if policy != ADMIT_NO_EVICT:
            assert (int(res.preemptions.sum()) > 0) == preempts


def test_full_batch_closed_loop():
    """Closed-loop clients: a finish frees a slot, the next request enters and is admitted."""
    arrival, prompt, output = _saturated(100, 4, 1000.0)
    cfg = _cfg(num_blocks=4000, block_size=4, max_num_seqs=24, budget=256)
    for lag in (False, True):
        res = both_ways(
            arrival, prompt, output, _lazy(cfg, output_lag=lag), make_costs(256, 24, **COSTS8),
            max_concurrency=30,
        )  # fmt: skip
        assert (res.rec_count > 1).any()


def test_budget_below_the_batch_writes_the_set_back():
    """A budget smaller than the running batch stops the walk part-way: such a step is never
    taken from the set (the sequences after the stop wait)."""
    arrival, prompt, output = _saturated(60, 5, 1000.0)
    cfg = _cfg(num_blocks=4000, block_size=4, max_num_seqs=32, budget=24, chunked=True)
    both_ways(arrival, prompt, output, cfg, make_costs(24, 32, **COSTS8))

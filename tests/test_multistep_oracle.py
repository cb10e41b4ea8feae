"""Multi-step scheduling (vLLM V0 --num-scheduler-steps N, docs/scheduler.md rule 9): the kernel
against the oracle for N in {1, 2, 4, 8}, and closed-form cases of the window rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import simulate
from test_kernel_vs_oracle import (
    cases,
    check,
    kv_pressure_cases,
    make_costs,
    repeated_prompt_cases,
)

from apex_fast.errors import ApexError
from apex_fast.sim.stream import SchedulerConfig, run_stream

STEPS = [1, 2, 4, 8]
SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]


def _multi(case, nsteps: int):
    """The case with prefill-only steps (multi-step runs without chunked prefill) and N."""
    arrival, prompt, output, cfg, costs = case
    cfg = dataclasses.replace(cfg, chunked=False, num_scheduler_steps=nsteps)
    return arrival, prompt, output, cfg, costs


# --------------------------------------------------------------------------- kernel vs oracle


@pytest.mark.parametrize("nsteps", STEPS)
@settings(max_examples=120, deadline=None, suppress_health_check=SLOW)
@given(case=cases(max_requests=30))
def test_kernel_matches_oracle_multi_step(nsteps, case):
    check(*_multi(case, nsteps))


@pytest.mark.parametrize("nsteps", STEPS)
@settings(max_examples=80, deadline=None, suppress_health_check=SLOW)
@given(case=kv_pressure_cases())
def test_kernel_matches_oracle_multi_step_under_kv_pressure(nsteps, case):
    """Lookahead blocks short: preemption (also of a sequence by itself) at window starts."""
    check(*_multi(case, nsteps))


@pytest.mark.parametrize("nsteps", [2, 8])
@settings(max_examples=60, deadline=None, suppress_health_check=SLOW)
@given(case=cases(max_requests=20), data=st.data())
def test_kernel_matches_oracle_multi_step_closed_loop(nsteps, case, data):
    """Slots freed by finishes, which come at window ends."""
    arrival = case[0]
    conc = data.draw(st.integers(1, arrival.size + 1), label="max_concurrency")
    check(*_multi(case, nsteps), conc=conc)


@pytest.mark.parametrize("nsteps", [4])
@settings(max_examples=40, deadline=None, suppress_health_check=SLOW)
@given(case=cases(max_requests=15), data=st.data())
def test_kernel_matches_oracle_multi_step_with_prefix_kv(nsteps, case, data):
    """KV present at admission (cross-attention) counts in the lookahead's blocks."""
    n = case[0].size
    prefix = data.draw(st.lists(st.integers(0, 100), min_size=n, max_size=n), label="prefix")
    check(*_multi(case, nsteps), prefix=prefix)


@pytest.mark.parametrize("nsteps", [2, 8])
@settings(max_examples=60, deadline=None, suppress_health_check=SLOW)
@given(case=repeated_prompt_cases())
def test_kernel_matches_oracle_multi_step_prefix_cache(nsteps, case):
    """Prefix caching under KV pressure: the lookahead blocks come from the free queue's head
    (evicting cached keys) like any other block."""
    *rest, keys = case
    check(*_multi(tuple(rest), nsteps), keys=keys)


# --------------------------------------------------------------------------- closed forms

A = 1e-3  # s per token of a step; nothing else costs time


def _costs():
    return make_costs(64, 8, tok_inc=np.full(64, A), seq_inc=np.zeros(8), c_attn=0.0,
                      c_ctx=0.0, overhead=0.0)  # fmt: skip


def _run(arrival, prompt, output, nsteps, **kw):
    base = dict(num_blocks=100, block_size=4, max_num_seqs=8, budget=64, chunked=False)
    base.update(kw)
    cfg = SchedulerConfig(num_scheduler_steps=nsteps, **base)
    return run_stream(
        np.asarray(arrival, np.float64), np.asarray(prompt, np.int64),
        np.asarray(output, np.int64), cfg, _costs(),
    )  # fmt: skip


@pytest.mark.parametrize("nsteps", [1, 2, 4, 8])
def test_arrival_mid_window_waits_for_its_end(nsteps):
    """A's 10-token prefill lasts 10 ms, each decode step 1 ms. B arrives 1.5 ms into A's first
    decode window and is prefilled when that window ends: at 10 + N ms (single step: after the
    second decode step, 12 ms); its first token comes 10 ms later."""
    res = _run([0.0, 0.0115], [10, 10], [100, 100], nsteps)
    window_end = 0.010 + max(nsteps, 2) * A
    assert res.first_token[0] == pytest.approx(0.010)
    assert res.first_token[1] == pytest.approx(window_end + 10 * A)


@pytest.mark.parametrize("nsteps", [2, 4, 8])
def test_finish_waits_for_window_end(nsteps):
    """Output 3: two decode tokens after the prefill's first. The window still runs all N
    steps (the extra tokens are computed and discarded); the request finishes at its end."""
    res = _run([0.0], [10], [3], nsteps)
    assert res.finish[0] == pytest.approx(0.010 + nsteps * A)
    assert res.num_steps == 1 + nsteps
    steps = res.steps()
    assert (steps["n_decode"][1:] == 1).all()


@pytest.mark.parametrize(("nsteps", "blocks"), [(1, 3), (2, 3), (4, 4), (8, 5)])
def test_lookahead_reserves_kv_of_the_window(nsteps, blocks):
    """Prompt 10, block size 4: after the prefill (3 blocks) the first decode window holds the
    KV of context 11 + N - 1 tokens: ceil((10 + N) / 4) blocks."""
    cfg = SchedulerConfig(num_blocks=100, block_size=4, max_num_seqs=8, budget=64,
                          chunked=False, num_scheduler_steps=nsteps)  # fmt: skip
    orc = simulate([0.0], [10], [50], cfg, _costs())
    assert orc.n_prefill_tokens[0] == 10 and orc.blocks_used[0] == 3
    assert orc.blocks_used[1 : 1 + nsteps] == [blocks] * nsteps  # reserved at the window start
    assert orc.blocks_used[1 + nsteps] == -(-(10 + 2 * nsteps) // 4)  # the next window's
    check([0.0], [10], [50], cfg, _costs())  # the kernel agrees (records merge the windows)


@pytest.mark.parametrize(("nsteps", "preempted"), [(1, 0), (4, 0), (8, 1)])
def test_lookahead_can_preempt(nsteps, preempted):
    """7 blocks of 4 tokens, two 8-token prompts (2 blocks each, 3 left). A window of N needs
    ceil((9 + N - 1) / 4) blocks per sequence: 3 each for N = 4 (2 new each, fits), 4 each for
    N = 8 (A takes 2 of the 3 free, B finds 1 and preempts itself)."""
    cfg = SchedulerConfig(num_blocks=7, block_size=4, max_num_seqs=8, budget=64,
                          chunked=False, num_scheduler_steps=nsteps)  # fmt: skip
    res, orc = check([0.0, 0.0], [8, 8], [20, 20], cfg, _costs())
    assert orc.n_prefill_tokens[0] == 16
    assert orc.n_decode[1] == 2 - preempted  # the first window
    # A holds ceil((8 + N) / 4) blocks; B its 2 + as many new, or none once preempted
    a_blocks = -(-(8 + nsteps) // 4)
    assert orc.blocks_used[1] == a_blocks + (0 if preempted else a_blocks)
    assert (res.finish > 0).all()


@pytest.mark.parametrize("nsteps", [1, 4])
def test_window_tokens_arrive_in_one_burst(nsteps):
    """Output 9: 8 decode tokens after the first, in 8 / N windows; the client sees one gap per
    window (the tokens of a window are delivered together at its end)."""
    res = _run([0.0], [10], [9], nsteps)
    assert int(res.gap_hist.sum()) == 8 // nsteps
    assert res.finish[0] == pytest.approx(0.010 + 8 * A)


def test_merged_windows_closed_form():
    """The kernel advances several windows in one record while nothing can change between
    them; the oracle steps one at a time. B's 16 decode tokens are 4 windows of 4 two-sequence
    steps (2 ms each), A's remaining 16 then 4 windows of 1 ms steps."""
    cfg = SchedulerConfig(num_blocks=100, block_size=4, max_num_seqs=8, budget=64,
                          chunked=False, num_scheduler_steps=4)  # fmt: skip
    res, _ = check([0.0, 0.0], [10, 6], [33, 17], cfg, _costs())
    assert res.finish[1] == pytest.approx(0.016 + 16 * 2 * A)
    assert res.finish[0] == pytest.approx(0.016 + 16 * 2 * A + 16 * A)
    assert res.num_steps == 1 + 32 and res.rec_count.size == 3  # prefill, 2 merged runs


@pytest.mark.parametrize("kw", [dict(chunked=True), dict(admission=2), dict(admission=1)])
def test_multi_step_needs_prefill_only_whole_prompt_scheduling(kw):
    base = dict(num_blocks=100, max_num_seqs=8, budget=64, chunked=False, num_scheduler_steps=4)
    cfg = SchedulerConfig(**{**base, **kw})
    with pytest.raises(ApexError, match="multi-step"):
        run_stream(np.zeros(1), np.ones(1, np.int64), np.ones(1, np.int64), cfg, _costs())


def test_engine_options_reach_the_scheduler():
    from apex_fast.models import load_model
    from apex_fast.sim.engine import EngineOptions, scheduler_config

    model = load_model("llama3.1-8b")
    opts = EngineOptions(num_scheduler_steps=8, chunked_prefill=False)
    assert scheduler_config(1000, 4096, opts, model).num_scheduler_steps == 8
    assert scheduler_config(1000, 4096, EngineOptions(), model).num_scheduler_steps == 1


def test_multi_step_with_speculative_decoding_is_refused(capsys):
    """vLLM 0.6 refuses speculative decoding with --num-scheduler-steps > 1: exit 2, one line."""
    from common import assert_bad

    args = ["plan", "--model", "llama3.1-8b", "--num-gpus-per-node", "1", "--prompt-len", "64",
            "--output-len", "8", "--num-requests", "2", "--num-scheduler-steps", "4",
            "--speculative-method", "ngram", "--quiet"]  # fmt: skip
    assert_bad(capsys, *args, needle="speculative")

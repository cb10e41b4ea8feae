"""Admission policies of the batching kernel (docs/scheduler.md "Admission policies").

ADMIT_NO_EVICT (TensorRT-LLM GUARANTEED_NO_EVICT) and ADMIT_PER_CHUNK (vLLM V1 per-chunk KV
allocation): the kernel against the oracle on random workloads, the invariants each policy
promises (checked step by step inside the oracle, and on the kernel's outputs here), and small
closed-form cases.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from apex_fast.kernels.params import ADMIT_NO_EVICT, ADMIT_PER_CHUNK, ADMIT_WHOLE_PROMPT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import simulate
from test_kernel_vs_oracle import (
    _cfg,
    cases,
    check,
    kv_pressure_cases,
    make_costs,
    shared_prefix_keys,
)

from apex_fast.sim.stream import SchedulerConfig, run_stream

POLICIES = st.sampled_from([ADMIT_NO_EVICT, ADMIT_PER_CHUNK])
SLOW = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _with(cfg: SchedulerConfig, policy: int) -> SchedulerConfig:
    return dataclasses.replace(cfg, admission=policy)


def _kernel_invariants(res, orc, cfg: SchedulerConfig) -> None:
    if cfg.admission == ADMIT_NO_EVICT:
        assert int(np.sum(res.preemptions)) == 0
    assert max(orc.blocks_used, default=0) <= cfg.num_blocks


@settings(max_examples=300, **SLOW)
@given(cases(), POLICIES)
def test_kernel_matches_oracle(case, policy):
    arrival, prompt, output, cfg, costs = case
    cfg = _with(cfg, policy)
    res, orc = check(arrival, prompt, output, cfg, costs, label=f"policy {policy}")
    _kernel_invariants(res, orc, cfg)


@settings(max_examples=200, **SLOW)
@given(kv_pressure_cases(), POLICIES, st.data())
def test_kernel_matches_oracle_under_kv_pressure(case, policy, data):
    arrival, prompt, output, cfg, costs = case
    cfg = _with(cfg, policy)
    conc = data.draw(st.one_of(st.just(0), st.integers(1, arrival.size + 1)), label="conc")
    res, orc = check(arrival, prompt, output, cfg, costs, conc=conc, label=f"policy {policy}")
    _kernel_invariants(res, orc, cfg)


@settings(max_examples=150, **SLOW)
@given(cases(max_requests=20), POLICIES, st.data())
def test_kernel_matches_oracle_with_prefix_kv(case, policy, data):
    arrival, prompt, output, cfg, costs = case
    n = arrival.size
    prefix = data.draw(st.lists(st.integers(0, 200), min_size=n, max_size=n), label="prefix")
    check(arrival, prompt, output, _with(cfg, policy), costs, prefix=prefix)


@settings(max_examples=200, **SLOW)
@given(cases(max_requests=30), POLICIES, st.data())
def test_kernel_matches_oracle_with_prefix_cache(case, policy, data):
    arrival, prompt, output, cfg, costs = case
    cfg = dataclasses.replace(cfg, window_blocks=0, full_kv_fraction=1.0, admission=policy)
    keys = data.draw(shared_prefix_keys(prompt, cfg.block_size), label="keys")
    conc = data.draw(st.one_of(st.just(0), st.integers(1, arrival.size + 1)), label="conc")
    res, orc = check(arrival, prompt, output, cfg, costs, conc=conc, keys=keys)
    _kernel_invariants(res, orc, cfg)


# --------------------------------------------------------------------------- closed-form cases


def _two_requests(policy: int):
    """Two requests at t=0, each 64 prompt + 64 output tokens, bs 16: 8 blocks to completion
    each, 4 for the prompt. 12 blocks: both prompts fit (8), both completions do not (16)."""
    cfg = _cfg(num_blocks=12, block_size=16, budget=512, chunked=True, admission=policy)
    arrival = np.zeros(2)
    prompt = np.array([64, 64], np.int64)
    output = np.array([64, 64], np.int64)
    res = run_stream(arrival, prompt, output, cfg, make_costs(512, 8))
    orc = simulate(arrival, prompt, output, cfg, make_costs(512, 8))
    return res, orc


def test_no_evict_serialises_what_does_not_fit_together():
    res, orc = _two_requests(ADMIT_NO_EVICT)
    assert int(res.preemptions.sum()) == 0
    # the second starts only after the first finished: its first token after the first's end
    assert res.first_token[1] > res.finish[0]
    assert orc.first_token[1] > orc.finish[0]


@pytest.mark.parametrize("policy", [ADMIT_WHOLE_PROMPT, ADMIT_PER_CHUNK])
def test_prompt_admission_overlaps_and_preempts(policy):
    res, _ = _two_requests(policy)
    # both prompts run in the first step; growing to 16 blocks they preempt one another
    assert res.first_token[0] == res.first_token[1]
    assert int(res.preemptions.sum()) >= 1


def test_per_chunk_admits_a_prompt_whose_whole_blocks_do_not_fit():
    """One decoding request holds 5 of 8 blocks; a 100-token prompt (7 blocks at bs 16) with a
    32-token budget: whole-prompt admission waits, per-chunk admission takes its first chunk
    (1 decode + 31 tokens: 2 blocks) at once, and pays with preemptions later."""
    arrival = np.array([0.0, 1e-9])
    prompt = np.array([64, 100], np.int64)
    output = np.array([40, 2], np.int64)
    base = dict(num_blocks=8, block_size=16, budget=32, chunked=True, max_num_seqs=4)
    costs = make_costs(32, 4)
    first = {}
    for policy in (ADMIT_WHOLE_PROMPT, ADMIT_PER_CHUNK):
        cfg = _cfg(**base, admission=policy)
        res = run_stream(arrival, prompt, output, cfg, costs)
        orc = simulate(arrival, prompt, output, cfg, costs)
        np.testing.assert_allclose(res.first_token, orc.first_token, rtol=1e-9)
        first[policy] = (res, orc)
    whole, per_chunk = first[ADMIT_WHOLE_PROMPT][1], first[ADMIT_PER_CHUNK][1]
    # per-chunk: the second request's prefill starts in the 3rd step (64 tokens over two steps
    # of 32, then 1 decode + 31 prompt tokens); whole prompt: not before the first finishes
    assert per_chunk.n_prefill_seqs[2] == 1 and per_chunk.n_decode[2] == 1
    assert whole.n_prefill_seqs[2] == 0
    # the price: 7 + 7 blocks do not fit 8, so the two preempt each other under per-chunk
    # allocation, never under whole-prompt admission
    assert int(first[ADMIT_WHOLE_PROMPT][0].preemptions.sum()) == 0
    assert int(first[ADMIT_PER_CHUNK][0].preemptions.sum()) >= 1


def test_per_chunk_admits_nothing_in_a_step_that_preempted():
    """Two decoding requests fill every block; the next decode needs a block and preempts the
    newest; a waiting request that would fit the freed blocks is not admitted in that step."""
    arrival = np.array([0.0, 0.0, 1e-9])
    prompt = np.array([16, 16, 1], np.int64)
    output = np.array([20, 20, 1], np.int64)
    cfg = _cfg(num_blocks=2, block_size=16, budget=64, chunked=True, admission=ADMIT_PER_CHUNK)
    costs = make_costs(64, 8)
    res = run_stream(arrival, prompt, output, cfg, costs)
    orc = simulate(arrival, prompt, output, cfg, costs)
    np.testing.assert_allclose(res.finish, orc.finish, rtol=1e-9)
    assert orc.preemptions[1] >= 1
    # the step after the preemption decodes request 0 alone: request 2 (one token, one block)
    # was not admitted with it although a block was free
    k = next(i for i, d in enumerate(orc.n_decode) if d == 1 and orc.n_prefill_tokens[i] == 0)
    assert orc.n_sched[k] == 1

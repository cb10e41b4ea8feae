"""KV pool per attention copy in the scheduler kernel (docs/memory.md, "KV cache per attention
copy"): each copy has num_blocks / copies blocks, a request takes all its blocks from the copy
that serves it, admission, the watermark and preemption look at that copy only, and the copies
run one step together. Kernel against the oracle, invariants, closed-form cases."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import simulate
from test_kernel_vs_oracle import assert_same, make_costs, step_costs, traces, windows

from apex_fast.errors import ApexError
from apex_fast.sim.stream import SchedulerConfig, run_stream


def check_copies(arrival, prompt, output, cfg, costs, copy, conc=0):
    """Kernel == oracle; the oracle asserts at every step that no copy is over its pool and
    that a copy's free blocks plus its requests' blocks are exactly its pool."""
    res = run_stream(arrival, prompt, output, cfg, costs, max_concurrency=conc, copy=copy)
    orc = simulate(arrival, prompt, output, cfg, costs, max_concurrency=conc, copy=copy)
    assert_same(res, orc, f"copies={cfg.copies}")
    assert (res.rec_blocks <= cfg.num_blocks).all()
    return res, orc


@st.composite
def copy_cases(draw, max_requests: int = 30):
    """Random traces on 1, 2, 4 or 8 copies, copies dealt in turn or at random, with pools from
    tiny (rejections) to tight (preemptions) to ample."""
    arrival, prompt, output = draw(traces(max_requests))
    n = arrival.size
    copies = draw(st.sampled_from([1, 2, 4, 8]))
    bs = draw(st.sampled_from([1, 4, 16]))
    big = max(-(-(int(p) + int(o)) // bs) for p, o in zip(prompt, output, strict=True))
    need = max(-(-int(p) // bs) for p in prompt)
    per_copy = draw(
        st.one_of(
            st.integers(1, max(1, big)),
            st.integers(need, max(need, big) + 2),
            st.integers(big, 2 * big + 8),
        )
    )
    if draw(st.booleans()):
        copy = np.arange(n) % copies
    else:
        copy = np.asarray(draw(st.lists(st.integers(0, copies - 1), min_size=n, max_size=n)))
    chunked = draw(st.booleans())
    longest = max(8, min(512, int(max(prompt))))
    cfg = SchedulerConfig(
        num_blocks=per_copy * copies,
        block_size=bs,
        watermark=draw(st.sampled_from([0, 0, 1, 2])),
        max_num_seqs=draw(st.integers(1, 16)),
        budget=draw(st.one_of(st.integers(8, 512), st.integers(longest, 512))),
        chunked=chunked,
        output_lag=draw(st.booleans()),
        copies=copies,
        **draw(windows()),
    )
    return arrival, prompt, output, cfg, draw(step_costs(cfg)), copy.astype(np.int64)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(copy_cases())
def test_kernel_matches_oracle_with_copies(case):
    check_copies(*case)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(copy_cases(max_requests=20), st.data())
def test_kernel_matches_oracle_with_copies_closed_loop(case, data):
    conc = data.draw(st.integers(1, case[0].size + 1), label="max_concurrency")
    check_copies(*case, conc=conc)


# --------------------------------------------------------------------------- closed form

COSTS = make_costs(512, 8)


def _cfg(**kw) -> SchedulerConfig:
    base = dict(num_blocks=20, block_size=16, watermark=0, max_num_seqs=8, budget=512)
    base.update(kw)
    return SchedulerConfig(**base)


def _run(cfg, copy, prompt, output):
    n = len(prompt)
    arrival = np.zeros(n)
    prompt = np.asarray(prompt, np.int64)
    output = np.asarray(output, np.int64)
    copy = None if copy is None else np.asarray(copy, np.int64)
    res, _ = check_copies(arrival, prompt, output, cfg, COSTS, copy)
    return res


def test_growth_beyond_one_copy_preempts_in_that_copy() -> None:
    # two requests of 64 + 32 tokens: 4 blocks at admission, 6 at their last token. Pooled
    # (20 blocks) they run side by side; on one copy of 10 blocks they need 12 and the last
    # admitted is preempted; on two copies each has its own 10
    prompt, output = [64, 64], [32, 32]
    pooled = _run(_cfg(), None, prompt, output)
    same = _run(_cfg(copies=2), [0, 0], prompt, output)
    apart = _run(_cfg(copies=2), [0, 1], prompt, output)
    assert pooled.preemptions.tolist() == [0, 0]
    assert same.preemptions.tolist() == [0, 1]  # the copy's last running request
    assert apart.preemptions.tolist() == [0, 0]
    np.testing.assert_array_equal(apart.finish, pooled.finish)  # no pressure: same schedule
    assert same.finish[1] > pooled.finish[1]


def test_request_that_fills_a_copy_serialises_that_copy() -> None:
    # 130-token prompts, one output token: 9 blocks each; a copy of 10 holds one at a time
    prompt, output = [130, 130, 130], [1, 1, 1]
    pooled = _run(_cfg(num_blocks=30), None, prompt, output)
    same = _run(_cfg(num_blocks=30, copies=3), [0, 1, 0], prompt, output)
    assert np.ptp(pooled.first_token) == 0.0  # all three in the first step
    assert same.first_token[0] == same.first_token[1]  # copies 0 and 1 side by side
    assert same.first_token[2] >= same.finish[0]  # copy 0 serves its second after its first
    assert same.preemptions.sum() == 0


def test_one_waiting_queue_for_all_copies() -> None:
    # the copies share one FCFS waiting queue: a head that does not fit its copy holds back the
    # requests behind it, also those of a copy with room (docs/memory.md)
    res = _run(_cfg(num_blocks=30, copies=3), [0, 0, 1], [130, 130, 130], [1, 1, 1])
    assert res.first_token[1] >= res.finish[0]
    assert res.first_token[2] == res.first_token[1]


def test_watermark_applies_per_copy() -> None:
    # 9-block requests, pools of 10 per copy: a watermark of 2 rejects them (9 > 10 - 2) even
    # though the stream has 20 blocks
    res = _run(_cfg(copies=2, watermark=2), [0, 1], [130, 130], [1, 1])
    assert (res.finish < 0).all()
    res = _run(_cfg(copies=2, watermark=1), [0, 1], [130, 130], [1, 1])
    assert (res.finish >= 0).all()


def test_one_copy_tags_change_nothing() -> None:
    prompt, output = [300, 20, 120, 64], [40, 90, 7, 33]
    base = _run(_cfg(num_blocks=30), None, prompt, output)
    tagged = _run(_cfg(num_blocks=30, copies=1), [0, 0, 0, 0], prompt, output)
    np.testing.assert_array_equal(base.finish, tagged.finish)
    np.testing.assert_array_equal(base.rec_blocks, tagged.rec_blocks)


def test_bad_copy_inputs_are_refused() -> None:
    arrival, prompt, output = np.zeros(2), np.array([10, 10]), np.array([2, 2])
    with pytest.raises(ApexError, match="cannot be split"):
        run_stream(arrival, prompt, output, _cfg(num_blocks=21, copies=2), COSTS)
    with pytest.raises(ApexError, match="attention copy in 0..1"):
        run_stream(arrival, prompt, output, _cfg(copies=2), COSTS, copy=np.array([0, 2]))
    keys = (np.array([7], np.int64), np.array([0, 1, 1], np.int64))
    prompt16 = np.array([16, 16])
    with pytest.raises(ApexError, match="prefix cache"):
        run_stream(arrival, prompt16, output, _cfg(copies=2), COSTS, block_keys=keys)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(copy_cases(), st.sampled_from([1, 2]))
def test_kernel_matches_oracle_with_copies_and_engine_admission(case, policy):
    """The engines' admission rules (TensorRT-LLM no-evict, vLLM V1 per-chunk) act within the
    request's copy: reservations and free blocks are the copy's own."""
    arrival, prompt, output, cfg, costs, copy = case
    cfg = dataclasses.replace(cfg, admission=policy)
    res, _ = check_copies(arrival, prompt, output, cfg, costs, copy)
    if policy == 1:  # no-evict never preempts
        assert int(res.preemptions.sum()) == 0

"""SGLang's admission rule in the batching kernel (ADMIT_TOKEN_RATIO, kernels/token_ratio.py;
docs/scheduler.md "Admission policies").

The kernel against the oracle on random workloads (prompts split into chunks or not, KV
pressure with retractions, closed loops, prefix KV, prefix caching, attention copies), the
invariants the rule promises, and closed-form cases worked out by hand from sglang 0.4.6.post5
`PrefillAdder.add_one_req` and `ScheduleBatch.retract_decode`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from apex_fast.kernels.params import (
    ADMIT_TOKEN_RATIO,
    CLIP_MAX_NEW_TOKENS,
    INIT_NEW_TOKEN_RATIO,
    MIN_NEW_TOKEN_RATIO,
    NEW_TOKEN_RATIO_DECAY,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import simulate
from test_kernel_vs_oracle import (
    cases,
    check,
    kv_pressure_cases,
    make_costs,
    shared_prefix_keys,
)

from apex_fast.errors import ApexError
from apex_fast.sim.stream import SchedulerConfig, run_stream

SLOW = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _sglang(cfg: SchedulerConfig, data) -> SchedulerConfig:
    """cfg under SGLang's rule: prefill-only steps, prompts split at a drawn chunk (or not)."""
    chunk = data.draw(
        st.one_of(st.just(0), st.integers(1, cfg.budget), st.just(cfg.budget)), label="chunk"
    )
    return dataclasses.replace(
        cfg, admission=ADMIT_TOKEN_RATIO, chunked=False, watermark=0, prefill_chunk=chunk
    )


def _invariants(res, orc, cfg: SchedulerConfig) -> None:
    """Never over the KV capacity, in every step (the oracle also asserts per step that no
    request holds more blocks than its computed tokens need)."""
    assert max(orc.blocks_used, default=0) <= cfg.num_blocks
    assert int(np.max(res.rec_blocks, initial=0)) <= cfg.num_blocks
    if cfg.prefill_chunk > 0:
        assert max(orc.n_prefill_tokens, default=0) <= cfg.prefill_chunk


@settings(max_examples=300, **SLOW)
@given(cases(), st.data())
def test_kernel_matches_oracle(case, data):
    arrival, prompt, output, cfg, costs = case
    cfg = _sglang(cfg, data)
    res, orc = check(arrival, prompt, output, cfg, costs, label="sglang")
    _invariants(res, orc, cfg)


@settings(max_examples=250, **SLOW)
@given(kv_pressure_cases(), st.data())
def test_kernel_matches_oracle_under_kv_pressure(case, data):
    arrival, prompt, output, cfg, costs = case
    cfg = _sglang(cfg, data)
    conc = data.draw(st.one_of(st.just(0), st.integers(1, arrival.size + 1)), label="conc")
    res, orc = check(arrival, prompt, output, cfg, costs, conc=conc, label="sglang")
    _invariants(res, orc, cfg)


@settings(max_examples=100, **SLOW)
@given(cases(max_requests=20), st.data())
def test_kernel_matches_oracle_with_prefix_kv(case, data):
    arrival, prompt, output, cfg, costs = case
    n = arrival.size
    prefix = data.draw(st.lists(st.integers(0, 200), min_size=n, max_size=n), label="prefix")
    check(arrival, prompt, output, _sglang(cfg, data), costs, prefix=prefix)


@settings(max_examples=150, **SLOW)
@given(cases(max_requests=30), st.data())
def test_kernel_matches_oracle_with_prefix_cache(case, data):
    arrival, prompt, output, cfg, costs = case
    cfg = dataclasses.replace(_sglang(cfg, data), window_blocks=0, full_kv_fraction=1.0)
    keys = data.draw(shared_prefix_keys(prompt, cfg.block_size), label="keys")
    conc = data.draw(st.one_of(st.just(0), st.integers(1, arrival.size + 1)), label="conc")
    res, orc = check(arrival, prompt, output, cfg, costs, conc=conc, keys=keys)
    _invariants(res, orc, cfg)


@settings(max_examples=150, **SLOW)
@given(kv_pressure_cases(), st.integers(2, 3), st.data())
def test_kernel_matches_oracle_with_attention_copies(case, copies, data):
    arrival, prompt, output, cfg, costs = case
    cfg = _sglang(cfg, data)
    per_copy = max(cfg.num_blocks // copies, 1)
    cfg = dataclasses.replace(cfg, num_blocks=per_copy * copies, copies=copies)
    n = arrival.size
    copy = np.asarray(data.draw(st.lists(st.integers(0, copies - 1), min_size=n, max_size=n)))
    res = run_stream(arrival, prompt, output, cfg, costs, copy=copy)
    orc = simulate(arrival, prompt, output, cfg, costs, copy=copy)
    np.testing.assert_allclose(res.first_token, orc.first_token, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.finish, orc.finish, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(res.preemptions, orc.preemptions)
    assert res.num_steps == orc.num_steps


# --------------------------------------------------------------------------- closed form

COSTS = dict(c_attn=0.0, c_ctx=0.0, overhead=1e-3)


def _cfg(**kw) -> SchedulerConfig:
    base = dict(
        num_blocks=1000, block_size=1, watermark=0, max_num_seqs=64, budget=1024,
        chunked=False, admission=ADMIT_TOKEN_RATIO,
    )  # fmt: skip
    base.update(kw)
    return SchedulerConfig(**base)


def _run(cfg, arrival, prompt, output, conc=0):
    costs = make_costs(cfg.budget, cfg.max_num_seqs, **COSTS)
    args = (np.asarray(arrival, float), np.asarray(prompt), np.asarray(output))
    res = run_stream(*args, cfg, costs, max_concurrency=conc)
    orc = simulate(*args, cfg, costs, max_concurrency=conc)
    check(*args, cfg, costs, conc=conc)
    return res, orc


def test_constants_are_sglangs():
    """sglang 0.4.6.post5 global_config.py / scheduler.py: 0.7, floor 0.7 x 0.14, 600 steps."""
    assert INIT_NEW_TOKEN_RATIO == 0.7
    assert MIN_NEW_TOKEN_RATIO == pytest.approx(0.098)
    assert NEW_TOKEN_RATIO_DECAY == pytest.approx(0.602 / 600)
    assert CLIP_MAX_NEW_TOKENS == 4096


def test_reservation_blocks_until_a_request_leaves():
    """1200 tokens. A (prompt 10, output 1000) runs; B (prompt 10, output 600) arrives 9 decode
    steps later: 1190 free tokens - 10 - 600 = 580 < ratio ~0.69 x A's ~990 remaining = ~685,
    so B is not admitted (SGLang NO_TOKEN), although its prompt fits the free blocks many times
    over. SGLang then tries no prefill until a running request leaves (batch_is_full), even
    after the decaying ratio would admit B: B starts only when A finishes."""
    cfg = _cfg(num_blocks=1200, budget=1024)
    res, _ = _run(cfg, [0.0, 0.01], [10, 10], [1000, 600])
    assert res.first_token[1] > res.finish[0]
    assert res.preemptions.tolist() == [0, 0]


def test_decayed_ratio_admits_then_retracts():
    """Same engine; B (prompt 10, output 500) arrives after ~540 decode steps of A, when the
    ratio has decayed to ~0.158: 650 free - 510 = 140 > 0.158 x ~460 = ~73, so B is admitted
    at once. A and B then need 1520 tokens of 1200: decode memory runs out and B, the request
    with fewer outputs, is retracted (recomputed later); A never is, and both finish."""
    cfg = _cfg(num_blocks=1200, budget=1024)
    res, orc = _run(cfg, [0.0, 0.6], [10, 10], [1000, 500])
    assert 0.6 < res.first_token[1] < 0.61  # admitted in the step after its arrival
    assert res.preemptions.tolist() == [0, 1]
    assert res.finish[1] > res.finish[0] > 0
    assert max(orc.blocks_used) <= cfg.num_blocks


def test_admission_exactly_at_the_bound():
    """Nothing running: a request is admitted iff prompt + min(output, 4096) < free tokens
    (SGLang: total_tokens >= rem_total_tokens -> NO_TOKEN), else rejected (it never fits)."""
    fits = _run(_cfg(num_blocks=1000), [0.0], [400], [599])[0]
    assert fits.first_token[0] > 0
    never = _run(_cfg(num_blocks=1000), [0.0], [400], [600])[0]
    assert never.first_token[0] == -1.0
    # the output counts clipped at 4096 tokens
    clipped = _run(_cfg(num_blocks=6000, budget=6000), [0.0], [1000], [4800])[0]
    assert clipped.first_token[0] > 0  # 1000 + 4096 < 6000 although 1000 + 4800 > 6000


def test_long_prompt_split_into_chunks():
    """prefill_chunk 256: a 1000-token prompt runs as 4 prefill-only steps (256, 256, 256, 232),
    its first token after the last; a request arriving meanwhile joins the last chunk's step."""
    cfg = _cfg(num_blocks=5000, prefill_chunk=256)
    res, orc = _run(cfg, [0.0, 0.0001], [1000, 20], [5, 5])
    assert orc.n_prefill_tokens[:4] == [256, 256, 256, 232 + 20]
    assert orc.n_decode[:4] == [0, 0, 0, 0]
    assert res.first_token[0] == pytest.approx(orc.start[3] + orc.duration[3])


def test_chunked_mode_is_refused():
    cfg = _cfg(chunked=True)
    with pytest.raises(ApexError, match="prefill-only"):
        run_stream(np.zeros(1), np.array([10]), np.array([5]), cfg, make_costs(1024, 64))

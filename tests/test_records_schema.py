"""The step-record schema (apex_fast/sim/records.py) and the kernel's packed parameters
(kernels/params.py): every column and slot named once, and the run arithmetic every reader uses
agrees with the steps the records stand for."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from apex_fast.kernels import params as kp

from apex_fast.sim import records as rec
from apex_fast.sim.stream import SchedulerConfig, StepCosts, kernel_params, run_stream


def _slots(module, prefix: str) -> list[int]:
    return sorted(v for k, v in vars(module).items() if k.startswith(prefix) and k[0] != "N")


@pytest.mark.parametrize(
    ("module", "prefix", "count"),
    [(rec, "F_", rec.N_F), (rec, "I_", rec.N_I), (kp, "PF_", kp.N_PF), (kp, "PI_", kp.N_PI)],
)
def test_columns_and_slots_are_distinct_and_dense(module, prefix, count) -> None:
    assert _slots(module, prefix) == list(range(count))


def _costs(budget: int, seqs: int, **kw) -> StepCosts:
    tok = np.concatenate([[0.0], np.cumsum(np.full(budget, 1e-5))])
    seq = np.concatenate([[0.0], np.cumsum(np.full(seqs, 1e-4))])
    return StepCosts(tok, seq, 1e-7, 1e-6, 2e-3, **kw)


def _stream():
    rng = np.random.default_rng(3)
    n = 40
    arrival = np.sort(rng.uniform(0.0, 2.0, n))
    prompt = rng.integers(8, 200, n)
    output = rng.integers(20, 300, n)
    cfg = SchedulerConfig(num_blocks=400, block_size=8, max_num_seqs=16, budget=256)
    return run_stream(arrival, prompt, output, cfg, _costs(256, 16))


def test_run_arithmetic_matches_the_expanded_steps() -> None:
    s = _stream()
    assert np.any(s.rec_count > 3)  # runs of identical decode steps were skipped
    steps = s.steps()
    owner = np.repeat(np.arange(s.rec_count.size), s.rec_count)
    dur = np.bincount(owner, weights=steps["duration"])
    ctx = np.bincount(owner, weights=steps["ctx"].astype(np.float64))
    cnt = s.rec_count.astype(np.float64)
    np.testing.assert_allclose(rec.run_duration(cnt, s.rec_d0, s.rec_dd), dur, rtol=1e-12)
    np.testing.assert_allclose(rec.run_ctx(cnt, s.rec_ctx0, s.rec_dec), ctx, rtol=1e-12)
    tok = rec.run_tokens(cnt, s.rec_pf_tok, s.rec_dec)
    assert tok.sum() == np.sum(steps["n_prefill_tokens"] + steps["n_decode"])
    # a run ends where its last step ends, and no later than the next record starts
    end = rec.run_end(s.rec_start, cnt, s.rec_d0, s.rec_dd)
    last = np.cumsum(s.rec_count) - 1
    np.testing.assert_allclose(end, steps["start"][last] + steps["duration"][last], rtol=1e-12)
    assert np.all(end[:-1] <= s.rec_start[1:] * (1 + 1e-12))
    # every request's last token comes at the end of some record (the kernel adds up the steps
    # one by one: equal up to rounding)
    gap = np.min(np.abs(s.finish[:, None] - end[None, :]), axis=1)
    assert np.all(gap <= 1e-9 * s.finish)


def test_kernel_params_fill_the_named_slots() -> None:
    cfg = SchedulerConfig(
        num_blocks=123, block_size=16, watermark=2, max_num_seqs=8, budget=64, chunked=False,
        output_lag=True, window_blocks=5, full_kv_fraction=0.25,
    )  # fmt: skip
    costs = _costs(64, 8, eager_floor=3e-3, host_seq=4e-6, graph_max_seqs=7,
                   piecewise_tokens=9, piecewise_floor=1e-3)  # fmt: skip
    pf, pi = kernel_params(cfg, costs, 5, 11)
    assert pf.dtype == np.float64 and pi.dtype == np.int64
    assert pf[kp.PF_C_CTX] == costs.c_ctx and pf[kp.PF_C_ATTN] == costs.c_attn
    assert pf[kp.PF_HOST_SEQ] == 4e-6 and pf[kp.PF_EAGER_FLOOR] == 3e-3
    assert pf[kp.PF_PIECEWISE_FLOOR] == 1e-3 and pf[kp.PF_FULL_FRAC] == 0.25
    assert pf[kp.PF_OVERHEAD] == costs.overhead
    assert (pi[kp.PI_NUM_BLOCKS], pi[kp.PI_WATERMARK], pi[kp.PI_BUDGET]) == (123, 2, 64)
    assert (pi[kp.PI_CHUNKED], pi[kp.PI_OUTPUT_LAG], pi[kp.PI_MAX_CONC]) == (0, 1, 5)
    assert (pi[kp.PI_PC_NKEYS], pi[kp.PI_WIN_BLOCKS], pi[kp.PI_GRAPH_MAX_SEQS]) == (11, 5, 7)
    assert (pi[kp.PI_PIECEWISE_TOKENS], pi[kp.PI_MAX_NUM_SEQS], pi[kp.PI_BLOCK_SIZE]) == (9, 8, 16)
    # reused for the same objects, rebuilt for others
    assert kernel_params(cfg, costs, 5, 11)[1] is pi
    other = dataclasses.replace(cfg, budget=32)
    assert kernel_params(other, costs, 5, 11)[1][kp.PI_BUDGET] == 32
    assert kernel_params(cfg, costs, 6, 11)[1][kp.PI_MAX_CONC] == 6

"""Step-cost tables built from one record per model cell, and the one FLOP model behind the MFU."""

from __future__ import annotations

import numpy as np
import pytest

from apex_fast import cells as names
from apex_fast.cells import COLLECTIVE_TITLES, CellKind
from apex_fast.dtypes import DTYPE_BYTES
from apex_fast.encdec import encoder_view
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.plans.plan import Collective
from apex_fast.sim.costs import compile_costs
from apex_fast.sim.costs.cells import BUILDERS, cell_kinds

H100 = get_device("H100-SXM-80GB")


def _compiled(name: str, gpus: int, pins: Pins, **kw):  # noqa: ANN202
    model = load_model(name)
    cl = Cluster(H100, 1, gpus)
    plan = enumerate_plans(model, cl, pins)[0][0]
    assert (plan.pp, plan.tp, plan.ep) == (pins.pp, pins.tp, pins.ep or plan.ep)
    return model, plan, compile_costs(model, cl, plan, 256, 16, **kw)


CASES = {
    "dense TP2 PP2": ("llama-7b", 4, Pins(dp=1, pp=2, tp=2)),
    "MoE EP4": ("mixtral-8x7b", 4, Pins(dp=1, pp=1, tp=4, ep=4)),
}


def test_every_cell_kind_has_a_builder() -> None:
    assert set(BUILDERS) == set(CellKind)
    assert CellKind.MLA in cell_kinds(is_moe=True, is_mla=True)
    assert CellKind.MOE in cell_kinds(is_moe=True, is_mla=False)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cell_records_add_up_to_the_step_tables(case: str) -> None:
    model, plan, cc = _compiled(*CASES[case])
    tok = [r for r in cc.cells if not r.per_seq]
    seq = [r for r in cc.cells if r.per_seq]
    np.testing.assert_allclose(sum(r.time for r in tok), cc.costs.tok_table, rtol=1e-12)
    np.testing.assert_allclose(sum(r.time for r in seq), cc.costs.seq_table, rtol=1e-12)
    assert [r.name for r in seq] == [names.LM_HEAD]
    rows = {r.name for r in tok}
    assert rows == set(cc.tok_ops)
    assert names.ATTENTION in rows and names.ELEMENTWISE in rows
    assert (names.MOE if model.is_moe else names.SWIGLU) in rows
    if plan.pp > 1:
        assert COLLECTIVE_TITLES[names.SEND_RECV] in rows
    attn = next(r for r in cc.cells if r.name == names.ATTENTION)
    assert (attn.pair_s, attn.ctx_s) == (cc.costs.c_attn, cc.costs.c_ctx)
    # every row has its source, carried by its records
    assert set(cc.provenance) >= rows | {names.LM_HEAD, names.STEP_OVERHEAD}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cell_flops_and_weights_add_up_to_the_model(case: str) -> None:
    model, plan, cc = _compiled(*CASES[case])
    assert cc.flops == model.step_flops()
    # the linear cells carry the per-token FLOPs exactly; embedding and collectives none
    assert sum(r.flops for r in cc.cells if not r.per_seq) == cc.flops.per_token
    assert [r.flops for r in cc.cells if r.per_seq] == [cc.flops.per_seq]
    # weights read per step: every weight belongs to one cell, apart from the extra parameters
    wb = DTYPE_BYTES[plan.weight_dtype]
    cells = sum(r.weight_bytes for r in cc.cells)
    assert cells + model.extra_params * wb == pytest.approx(cc.bytes_per_step, rel=1e-12)


def test_linear_flops_unchanged_for_decoders() -> None:
    """The MFU of a decoder-only model keeps its FLOPs bit for bit: 2 x the active parameters
    outside embedding, LM head and extras, per token; 4 x layers x heads x head dim per pair."""
    for name in ("llama-7b", "mixtral-8x7b", "qwen3-235b-a22b"):
        m = load_model(name)
        edge = m.embedding_params() + m.lm_head_params() + m.extra_params
        f = m.step_flops()
        assert f.per_token == 2.0 * max(m.params_active() - edge, 0)
        assert f.per_pair == f.per_ctx == 4.0 * m.num_layers * m.num_heads * m.head_dim
        assert f.per_seq == 2.0 * m.hidden_size * m.vocab_size


def test_encoder_decoder_decoder_flops_leave_out_the_encoder() -> None:
    """A decoder token of T5 does not run the encoder, nor the cross-attention K/V projections
    (computed once per request over the encoder output): the MFU counted both before."""
    t5 = load_model("t5")
    f = t5.step_flops()
    edge = t5.embedding_params() + t5.lm_head_params() + t5.extra_params
    cross_kv = t5.num_layers * 2 * t5.hidden_size * t5.num_kv_heads * t5.head_dim
    assert f.per_token == 2.0 * (t5.params_active() - edge - t5.encoder_params() - cross_kv)
    assert t5.encoder_params() > 0.4 * t5.params_total()


def test_encoder_flops_bidirectional_and_cross_kv() -> None:
    """An encoder pass: every token attends to the whole input (twice the causal pairs the
    scheduler counts) and computes the decoder's cross-attention K/V when asked."""
    t5 = load_model("t5")
    enc = encoder_view(t5)
    plain, with_kv = enc.step_flops(), enc.step_flops(cross_kv_layers=t5.num_layers)
    assert plain.per_pair == 2.0 * plain.per_ctx
    assert plain.per_seq == 0.0
    assert plain.per_token == 2.0 * t5.encoder_params()
    kv = 2 * t5.hidden_size * t5.num_kv_heads * t5.head_dim
    assert with_kv.per_token - plain.per_token == 2.0 * t5.num_layers * kv
    # the compiled encoder pass uses the same figures
    cl = Cluster(H100, 1, 1)
    plan = enumerate_plans(enc, cl, Pins(dp=1, pp=1, tp=1))[0][0]
    cc = compile_costs(enc, cl, plan, 64, 4, cross_kv_layers=t5.num_layers)
    assert cc.flops == with_kv


def test_mla_flops_follow_the_kernels() -> None:
    """DeepSeek-V3 MLA: prefill attention with keys and values expanded per head (qk 192, v 128),
    decode in the weight-absorbed form over the latent (2 x 512 + 64), as models/mla.py times
    them; the old count used 2 x 192 for both."""
    ds = load_model("deepseek-v3")
    f = ds.step_flops()
    assert f.per_pair == 2.0 * 61 * 128 * (192 + 128)
    assert f.per_ctx == 2.0 * 61 * 128 * (2 * 512 + 64)
    assert ds.flops_per_token(1000) - ds.flops_per_token(0) == pytest.approx(1000 * f.per_ctx)


def test_flops_per_token_is_the_step_model() -> None:
    m = load_model("llama3-70b")
    f = m.step_flops()
    assert m.flops_per_token(100) == f.per_token + f.per_seq + 100 * f.per_ctx


def test_one_place_for_collective_titles() -> None:
    for kind, title in COLLECTIVE_TITLES.items():
        assert Collective(kind, 2, names.PLAN_ATTENTION).title == title

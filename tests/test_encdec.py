"""Encoder-decoder hand-off: decoder arrivals are encoder completions; cross-attention KV is a
per-request prefix that costs KV blocks and decode-time reads but no prefill compute."""

from __future__ import annotations

import numpy as np
import pytest

from apex_fast.encdec import encoder_options, encoder_view, request_finish
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.workload import Workload, static_workload
from apex_fast.workload.encoder_decoder import decoder_workload, encoder_workload

H100 = get_device("H100-SXM-80GB")


def test_encoder_view_has_no_vocabulary_and_encoder_layers() -> None:
    m = load_model("whisper")
    e = encoder_view(m)
    assert e.arch == "encoder" and e.num_layers == m.encoder_layers and e.vocab_size == 0
    assert e.params_total() == pytest.approx(m.encoder_params(), rel=1e-9)


def test_whisper_and_t5_lengths() -> None:
    wl = static_workload(4, 100, 20)
    whisper, t5 = load_model("whisper"), load_model("t5")
    assert list(encoder_workload(whisper, wl).prompt) == [1500] * 4
    assert list(encoder_workload(t5, wl).prompt) == [100] * 4
    fin = np.array([0.4, 0.1, 0.3, 0.2])
    dw = decoder_workload(t5, wl, fin)
    assert list(dw.arrival) == sorted(fin)
    assert list(dw.prompt) == [1] * 4 and list(dw.prefix) == [100] * 4
    assert list(decoder_workload(whisper, wl, fin).prompt) == [100] * 4


def test_decoder_requests_start_after_their_encoder_pass() -> None:
    m = load_model("whisper")
    cl = Cluster(H100, 1, 1)
    wl = static_workload(16, 32, 16)
    enc = encoder_view(m)
    ewl = encoder_workload(m, wl)
    eopts = encoder_options(EngineOptions(), ewl.prompt)
    eplan = enumerate_plans(enc, cl)[0][0]
    eres = simulate_plan(enc, cl, eplan, ewl, eopts)
    assert eres.feasible
    fin = request_finish(eres)
    assert np.all(fin > 0)
    dwl = decoder_workload(m, wl, fin)
    dplan = enumerate_plans(m, cl, Pins(tp=1))[0][0]
    dres = simulate_plan(m, cl, dplan, dwl, EngineOptions())
    for s, ids in zip(dres.streams, dres.stream_index, strict=True):
        assert np.all(s.first_token > dwl.arrival[ids])


def test_cross_attention_prefix_slows_decode_but_not_prefill_compute() -> None:
    m = load_model("whisper")
    cl = Cluster(H100, 1, 1)
    plan = enumerate_plans(m, cl, Pins(tp=1))[0][0]
    base = dict(arrival=np.zeros(1), prompt=np.array([8]), output=np.array([64]))
    without = simulate_plan(m, cl, plan, Workload(**base), EngineOptions())
    with_x = simulate_plan(m, cl, plan, Workload(**base, prefix=np.array([1500])), EngineOptions())
    s0, s1 = without.streams[0], with_x.streams[0]
    # the prefill step processes the same 8 tokens (plus attention over 1500 extra keys)
    assert s1.rec_pf_tok[0] == s0.rec_pf_tok[0] == 8
    # every decode step reads 1500 more context tokens
    assert (s1.finish[0] - s1.first_token[0]) > (s0.finish[0] - s0.first_token[0])
    assert with_x.streams[0].rec_blocks.max() > without.streams[0].rec_blocks.max()

"""Metrics over chunks of step records (apex_fast.metrics.records): the same figures whether the
records are reduced at once, chunk by chunk, or summarised per stream right after simulation."""

from __future__ import annotations

import dataclasses
import math

import pytest

import apex_fast.metrics.records as records
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.metrics.summary import compute_metrics
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.workload import load_trace


def _run():
    model = load_model("llama-7b")
    cluster = Cluster(get_device("H100-SXM-80GB"), 1, 2)
    plan = next(p for p in enumerate_plans(model, cluster, Pins(dp=2, pp=1, tp=1))[0])
    wl = load_trace("traces/lmsys_r2_n300.jsonl")
    res = simulate_plan(model, cluster, plan, wl, EngineOptions())
    return res, compute_metrics(res, wl, cluster), (model, cluster, plan, wl)


def _same(a, b) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, float):
            assert x == pytest.approx(y, rel=1e-12, abs=1e-15) or (math.isnan(x) and math.isnan(y))
        elif f.name == "breakdown":
            assert [r[0] for r in x] == [r[0] for r in y]
            for r, s in zip(x, y, strict=True):
                assert r[1] == pytest.approx(s[1], rel=1e-12)
        else:
            assert x == y, f.name


def test_chunked_sums_match_one_pass(monkeypatch):
    res, whole, (_, cluster, _, wl) = _run()
    assert len(res.streams) == 2 and sum(s.rec_count.size for s in res.streams) > 100
    monkeypatch.setattr(records, "RECORD_CHUNK", 37)  # many chunks, some across streams
    _same(compute_metrics(res, wl, cluster), whole)


def test_compacted_streams_give_the_same_metrics(monkeypatch):
    _, whole, (model, cluster, plan, wl) = _run()
    monkeypatch.setattr(records, "COMPACT_RECORDS", 10)
    res = simulate_plan(model, cluster, plan, wl, EngineOptions())
    assert all(s.rec_sums is not None and s.rec_count.size == 0 for s in res.streams)
    assert sum(s.num_steps for s in res.streams) == whole.num_steps
    _same(compute_metrics(res, wl, cluster), whole)


def test_peak_kv_blocks_is_the_largest_record() -> None:
    res, m, _ = _run()
    peak = max(int(s.rec_blocks.max()) for s in res.streams)
    assert m.kv_blocks_peak == peak > 0
    assert peak <= res.memory.kv_blocks_per_replica

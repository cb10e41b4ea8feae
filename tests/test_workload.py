"""Benchmark-style workloads: closed loop (Little's law, one client), request rate vs replayed
trace, length distributions, the stream split of the clients."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.metrics.requests import request_table
from apex_fast.metrics.summary import compute_metrics
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.workload import (
    Workload,
    WorkloadOptions,
    build_workload,
    closed_loop_split,
    load_trace,
    static_workload,
)
from apex_fast.workload.generators import generate, synthetic_lengths, uniform_bounds
from apex_fast.workload.writers import write_trace

H100 = get_device("H100-SXM-80GB")


def _sim(wl: Workload, gpus: int = 1, **pins):
    m = load_model("llama-7b")
    cl = Cluster(H100, 1, gpus)
    plan = enumerate_plans(m, cl, Pins(**pins))[0][0]
    res = simulate_plan(m, cl, plan, wl, EngineOptions())
    assert res.feasible, res.reason
    return res, compute_metrics(res, wl, cl), cl


def _in_flight_max(df) -> int:
    """Most requests between their sending and their finish at any instant."""
    ev = sorted(
        [(t, 1) for t in df["sent_s"].to_list()] + [(t, -1) for t in df["finish_s"].to_list()],
        key=lambda x: (x[0], x[1]),
    )
    return int(np.max(np.cumsum([d for _, d in ev])))


# ------------------------------------------------------------------ closed loop


@pytest.mark.parametrize(("gpus", "dp", "conc"), [(1, 1, 8), (2, 2, 8), (2, 2, 3)])
def test_closed_loop_obeys_littles_law(gpus: int, dp: int, conc: int) -> None:
    """N clients that always have a request in flight: N = throughput x mean latency (the
    only loss is the drain at the end, under 1% with 2000 requests)."""
    opts = WorkloadOptions(
        num_requests=2000,
        prompt_len=512,
        output_len=64,
        length_dist="uniform",
        random_range_ratio=0.5,
        max_concurrency=conc,
        seed=3,
    )
    wl = build_workload(opts)
    assert wl.max_concurrency == conc
    res, m, _ = _sim(wl, gpus, dp=dp, tp=1)
    little = m.throughput_requests_per_s * m.latency_mean_s
    assert little == pytest.approx(conc, rel=0.02)
    assert little <= conc * (1 + 1e-9)
    df = request_table(res, wl)
    assert _in_flight_max(df) == conc
    # every request is sent once a slot frees: sent times never precede arrivals
    assert (df["sent_s"] >= df["arrival_s"]).all()


def test_closed_loop_requests_wait_for_a_client() -> None:
    """With 2 clients, the third request is sent when the first one finishes."""
    wl = Workload(
        np.zeros(3),
        np.array([64, 64, 64]),
        np.array([8, 32, 8]),
        max_concurrency=2,
    )
    res, m, _ = _sim(wl, tp=1)
    df = request_table(res, wl)
    fin = df["finish_s"].to_list()
    sent = df["sent_s"].to_list()
    assert sent[:2] == [0.0, 0.0]
    assert sent[2] == pytest.approx(min(fin[:2]), rel=1e-12)
    # TTFT counts from the sending, as the benchmark client measures it
    assert m.ttft_mean_s == pytest.approx(float(df["ttft_s"].mean()), rel=1e-12)


def test_max_concurrency_one_gives_the_single_request_latency() -> None:
    prompt, out = 700, 40
    wl = build_workload(
        WorkloadOptions(num_requests=6, prompt_len=prompt, output_len=out, max_concurrency=1)
    )
    _, m1, _ = _sim(wl, tp=1)
    _, alone, _ = _sim(static_workload(1, prompt, out), tp=1)
    assert m1.latency_mean_s == pytest.approx(alone.latency_mean_s, rel=1e-9)
    assert m1.latency_p99_s == pytest.approx(alone.latency_mean_s, rel=1e-9)
    assert m1.ttft_mean_s == pytest.approx(alone.ttft_mean_s, rel=1e-9)
    assert m1.tpot_p50_s == pytest.approx(alone.tpot_mean_s, rel=1e-9)
    # one after the other: the run lasts six single-request latencies
    assert m1.makespan_s == pytest.approx(6 * alone.latency_mean_s, rel=1e-9)


def test_closed_loop_split_spreads_clients_and_requests() -> None:
    for n, dp, pp, conc in [(10, 2, 2, 8), (10, 2, 2, 3), (7, 4, 1, 1), (9, 1, 3, 5)]:
        index, slots = closed_loop_split(n, dp, pp, conc)
        assert len(index) == len(slots) == dp * pp
        assert sum(slots) == conc
        allids = np.sort(np.concatenate(index))
        assert list(allids) == list(range(n))
        for ids, s in zip(index, slots, strict=True):
            assert (ids.size == 0) == (s == 0)
        assert max(slots) - min(s for s in slots if s) <= 1
        # requests in proportion to the clients
        sizes = [ids.size for ids in index]
        assert all(abs(z - n * s / conc) <= 1 + s for z, s in zip(sizes, slots, strict=True))
    # fewer clients than streams: the used streams are on different replicas
    index, slots = closed_loop_split(10, 2, 2, 2)
    assert slots == [1, 0, 1, 0]


# ------------------------------------------------------------------ request rate vs trace


def test_request_rate_is_the_trace_generator_with_the_same_seed(tmp_path: Path) -> None:
    """`plan --length-dist lmsys --request-rate R --seed s` draws exactly the trace that
    `trace --kind lmsys --rate R --seed s` writes."""
    t, p, o = generate("lmsys", 3.0, 500, seed=7)
    path = tmp_path / "t.jsonl"
    write_trace(path, t, p, o)
    replay = load_trace(path)
    synth = build_workload(
        WorkloadOptions(num_requests=500, length_dist="lmsys", request_rate=3.0, seed=7)
    )
    np.testing.assert_array_equal(replay.prompt, synth.prompt)
    np.testing.assert_array_equal(replay.output, synth.output)
    np.testing.assert_allclose(replay.arrival, synth.arrival, atol=1e-9)
    _, a, _ = _sim(replay, tp=1)
    _, b, _ = _sim(synth, tp=1)
    for k in ("ttft_mean_s", "tpot_mean_s", "latency_mean_s", "latency_p99_s"):
        assert getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-6), k


def test_trace_replay_and_request_rate_agree_within_sampling_error(tmp_path: Path) -> None:
    """A Poisson trace at rate R replayed as recorded, and the same lengths sent by
    --request-rate R with other arrival draws, give the same statistics within sampling
    error (2000 requests; fixed seeds)."""
    rate = 8.0
    t, p, o = generate("lmsys", rate, 2000, seed=11)
    path = tmp_path / "t.jsonl"
    write_trace(path, t, p, o)
    replay = load_trace(path)
    resampled = build_workload(WorkloadOptions(trace_file=path, request_rate=rate, seed=12))
    np.testing.assert_array_equal(replay.prompt, resampled.prompt)
    assert not np.allclose(replay.arrival, resampled.arrival)
    assert any("replaced by Poisson at 8 req/s" in n for n in resampled.notes)
    _, a, _ = _sim(replay, tp=1)
    _, b, _ = _sim(resampled, tp=1)
    # throughput follows the realised arrival span, a sum of 1999 exponential gaps: relative
    # sampling error 1/sqrt(2000) = 2.2%, so 3 sigma = 6.7% (these seeds: 5.1%)
    assert a.output_tokens_per_s == pytest.approx(b.output_tokens_per_s, rel=0.067)
    assert a.throughput_requests_per_s == pytest.approx(b.throughput_requests_per_s, rel=0.067)
    # per-request statistics: mean of 2000 requests (these seeds: within 1%)
    assert a.tpot_mean_s == pytest.approx(b.tpot_mean_s, rel=0.05)
    assert a.ttft_mean_s == pytest.approx(b.ttft_mean_s, rel=0.05)
    assert a.latency_mean_s == pytest.approx(b.latency_mean_s, rel=0.05)


def test_gamma_burstiness_keeps_the_mean_rate() -> None:
    for b in (0.25, 1.0, 4.0):
        wl = build_workload(
            WorkloadOptions(num_requests=20000, request_rate=5.0, burstiness=b, seed=1)
        )
        gaps = np.diff(wl.arrival)
        assert 1.0 / gaps.mean() == pytest.approx(5.0, rel=0.05)
        # gamma(shape b): coefficient of variation 1/sqrt(b)
        assert gaps.std() / gaps.mean() == pytest.approx(1 / math.sqrt(b), rel=0.1)


# ------------------------------------------------------------------ lengths


def test_uniform_lengths_are_vllms_random_dataset() -> None:
    # computed in floating point exactly as vLLM does: 100 * (1 + 0.1) = 110.00000000000001,
    # whose ceiling is 111 (vLLM samples [90, 111] for these settings too)
    assert uniform_bounds(100, 0.1) == (90, 111)
    assert uniform_bounds(100, 0.5) == (50, 150)
    assert uniform_bounds(1000, 0.25) == (750, 1250)
    assert uniform_bounds(3, 0.5) == (1, 5)  # floor(1.5) = 1, ceil(4.5) = 5
    assert uniform_bounds(1, 0.9) == (1, 2)  # lower bound raised to 1
    rng = np.random.default_rng(0)
    p, o, _ = synthetic_lengths("uniform", 20000, 100, 20, 0.5, rng)
    assert p.min() == 50 and p.max() == 150
    assert o.min() == 10 and o.max() == 30
    assert p.mean() == pytest.approx(100, rel=0.01)
    # every integer of the range is drawn about equally often
    counts = np.bincount(p - 50)
    assert counts.size == 101 and counts.min() > 0.6 * counts.mean()


def test_lognormal_lengths_have_the_asked_mean() -> None:
    rng = np.random.default_rng(0)
    p, o, _ = synthetic_lengths("lognormal", 200000, 2048, 256, 0.0, rng)
    assert p.mean() == pytest.approx(2048, rel=0.03)
    assert o.mean() == pytest.approx(256, rel=0.03)
    assert p.min() >= 1 and o.min() >= 1
    # the spread of the chat fit: median well below the mean
    assert np.median(p) < 0.6 * p.mean()


def test_fixed_lengths_with_rate_and_default_is_static() -> None:
    wl = build_workload(WorkloadOptions(num_requests=5, prompt_len=10, output_len=3))
    assert (wl.arrival == 0).all() and wl.name.startswith("static")
    wl = build_workload(
        WorkloadOptions(num_requests=5, prompt_len=10, output_len=3, request_rate=2.0)
    )
    assert (wl.prompt == 10).all() and wl.arrival[-1] > 0
    wl = build_workload(
        WorkloadOptions(num_requests=5, prompt_len=10, output_len=3, random_range_ratio=0.5)
    )
    assert "uniform" in wl.name


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(request_rate=0.0), "--request-rate must be a positive"),
        (dict(request_rate=float("nan")), "--request-rate must be a positive"),
        (dict(request_rate=2.0, burstiness=0.0), "--burstiness must be > 0"),
        (dict(burstiness=2.0), "--burstiness needs a finite --request-rate"),
        (dict(max_concurrency=-1), "--max-concurrency must be >= 1"),
        (dict(random_range_ratio=1.0), "--random-range-ratio must be in [0, 1)"),
        (dict(length_dist="zipf"), "unknown --length-dist 'zipf'"),
        (dict(seed=-1), "--seed must be >= 0"),
        (dict(num_requests=10**9), "a synthetic workload may hold"),
        (dict(trace_file=Path("x.jsonl"), length_dist="uniform"), "give one"),
        (dict(trace_file=Path("x.jsonl"), random_range_ratio=0.2), "give one"),
    ],
)
def test_bad_workload_options(kw: dict, message: str) -> None:
    with pytest.raises(ApexError, match=None) as e:
        build_workload(WorkloadOptions(**kw))
    assert message in str(e.value)

"""Parallel plan evaluation gives the same result whatever the number of workers; progress."""

from __future__ import annotations

import io
import sys
import types

import pytest
from common import random_workload, search_summary

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.progress import SearchProgress, progress_for
from apex_fast.search import MetricOptions, search
from apex_fast.sim.engine import EngineOptions


@pytest.fixture(scope="module")
def setup():
    model = load_model("llama3-70b")
    cluster = Cluster(get_device("H100-SXM-80GB"), 1, 8)
    return model, cluster, random_workload(3, 96, 20.0, 600, 200)


@pytest.mark.parametrize("workers", [2, 3])
def test_same_result_whatever_the_workers(setup, workers):
    model, cluster, wl = setup
    base = search(model, cluster, wl, EngineOptions(), MetricOptions(), workers=1)
    par = search(model, cluster, wl, EngineOptions(), MetricOptions(), workers=workers)
    assert search_summary(par) == search_summary(base)
    auto = search(model, cluster, wl, EngineOptions(), MetricOptions())
    assert search_summary(auto) == search_summary(base)


def test_progress_callback_counts_every_plan(setup):
    model, cluster, wl = setup
    calls = []
    sr = search(
        model,
        cluster,
        wl,
        EngineOptions(),
        MetricOptions(),
        workers=2,
        progress=lambda i, n, label: calls.append((i, n)),
    )
    n = sr.num_candidates
    assert calls[0] == (0, n) and calls[-1] == (n, n)
    assert sorted({i for i, _ in calls}) == list(range(n + 1))


def test_bad_worker_count(setup):
    model, cluster, wl = setup
    with pytest.raises(ApexError, match="--workers"):
        search(model, cluster, wl, EngineOptions(), MetricOptions(), workers=0)


def test_ray_missing_is_a_clear_error(setup, monkeypatch):
    model, cluster, wl = setup
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ApexError, match=r"pip install -e '\.\[ray\]'"):
        search(model, cluster, wl, EngineOptions(), MetricOptions(), ray_address="auto")


def test_ray_path_with_a_stand_in(setup, monkeypatch):
    """The Ray code path, run on a minimal in-process stand-in of the Ray API."""
    model, cluster, wl = setup
    calls = {}

    class Ref:
        def __init__(self, value):
            self.value = value

    def init(**kw):
        calls["init"] = kw

    def remote(fn):
        return types.SimpleNamespace(
            remote=lambda *a: Ref(fn(*[x.value if isinstance(x, Ref) else x for x in a]))
        )

    def wait(refs, num_returns=1):
        return list(reversed(refs[-num_returns:])), refs[:-num_returns]  # out of order

    fake = types.SimpleNamespace(
        is_initialized=lambda: False,
        init=init,
        put=Ref,
        remote=remote,
        wait=wait,
        get=lambda r: r.value,
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    base = search(model, cluster, wl, EngineOptions(), MetricOptions(), workers=1)
    via_ray = search(model, cluster, wl, EngineOptions(), MetricOptions(), ray_address="auto")
    assert calls["init"]["address"] == "auto"
    assert search_summary(via_ray) == search_summary(base)


def test_progress_silent_when_quiet_or_not_a_terminal():
    assert progress_for(quiet=True) is None
    assert progress_for(quiet=False, stream=io.StringIO()) is None


def test_progress_bar_draws_after_the_delay():
    out = io.StringIO()
    p = SearchProgress(out, delay_s=0.0, force=True)
    p(0, 4, "DP1 PP1 TP8")
    p(2, 4, "DP2 PP1 TP4")
    p(4, 4, "done")
    assert "plans" in out.getvalue()
    quiet = io.StringIO()
    p = SearchProgress(quiet, delay_s=60.0, force=True)  # a short search: no bar at all
    p(0, 4, "a")
    p(4, 4, "done")
    assert quiet.getvalue() == ""

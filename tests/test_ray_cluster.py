"""`--ray` against a real local Ray cluster: the same plans, metrics and per-request times as
local workers. Skipped when Ray is not installed (it is an optional extra: pip install -e
'.[ray]'); the cluster is started once for the module on this machine, with two CPUs and no
dashboard, so the test stays small enough for CI."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from apex_fast.cli import main  # noqa: E402
from apex_fast.hardware.cluster import Cluster  # noqa: E402
from apex_fast.hardware.devices import get_device  # noqa: E402
from apex_fast.models import load_model  # noqa: E402
from apex_fast.search import MetricOptions, search  # noqa: E402
from apex_fast.sim.engine import EngineOptions  # noqa: E402
from apex_fast.workload import Workload  # noqa: E402


@pytest.fixture(scope="module")
def local_cluster():
    """A one-node Ray cluster on this machine, the way `ray start --head` would run it."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _setup():
    model = load_model("llama3-70b")
    cluster = Cluster(get_device("H100-SXM-80GB"), 1, 8)
    rng = np.random.default_rng(5)
    n = 64
    wl = Workload(
        arrival=np.sort(rng.uniform(0, 15, n)),
        prompt=rng.integers(16, 500, n).astype(np.int64),
        output=rng.integers(1, 150, n).astype(np.int64),
        name="random",
    )
    return model, cluster, wl


def _summary(sr):
    rows = []
    for e in sr.ranked:
        m = e.metrics
        rows.append(
            (
                e.result.plan.label,
                m.ttft_mean_s,
                m.tpot_mean_s,
                m.latency_p95_s,
                m.energy_kj,
                m.num_steps,
                tuple(np.concatenate([s.first_token for s in e.result.streams]).tolist()),
                tuple(np.concatenate([s.finish for s in e.result.streams]).tolist()),
            )
        )
    return rows, sr.infeasible, sr.num_candidates


def test_ray_cluster_gives_the_local_results(local_cluster):
    model, cluster, wl = _setup()
    local = search(model, cluster, wl, EngineOptions(), MetricOptions(), workers=1)
    # the cluster is already connected: the search submits one task per plan to it
    via_ray = search(
        model, cluster, wl, EngineOptions(), MetricOptions(), ray_address=local_cluster
    )
    assert len(local.ranked) >= 5
    assert _summary(via_ray) == _summary(local)


def test_cli_ray_flag_on_the_cluster(local_cluster, capsys):
    args = [
        "plan", "--model", "llama-7b", "--num-gpus-per-node", "2", "--num-requests", "16",
        "--prompt-len", "128", "--output-len", "32", "--all", "--quiet",
    ]  # fmt: skip
    assert main(args) == 0
    local = capsys.readouterr().out
    assert main([*args, "--ray", local_cluster]) == 0
    assert capsys.readouterr().out == local

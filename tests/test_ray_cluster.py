"""`--ray` against a real local Ray cluster: the same plans, metrics and per-request times as
local workers. Skipped when Ray is not installed (it is an optional extra: pip install -e
'.[ray]'); the cluster is started once for the module on this machine, with two CPUs and no
dashboard, so the test stays small enough for CI."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from common import random_workload, search_summary  # noqa: E402

from apex_fast.cli import main  # noqa: E402
from apex_fast.hardware.cluster import Cluster  # noqa: E402
from apex_fast.hardware.devices import get_device  # noqa: E402
from apex_fast.models import load_model  # noqa: E402
from apex_fast.search import MetricOptions, search  # noqa: E402
from apex_fast.sim.engine import EngineOptions  # noqa: E402


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
    return model, cluster, random_workload(5, 64, 15.0, 500, 150)


def test_ray_cluster_gives_the_local_results(local_cluster):
    model, cluster, wl = _setup()
    local = search(model, cluster, wl, EngineOptions(), MetricOptions(), workers=1)
    # the cluster is already connected: the search submits one task per plan to it
    via_ray = search(
        model, cluster, wl, EngineOptions(), MetricOptions(), ray_address=local_cluster
    )
    assert len(local.ranked) >= 5
    assert search_summary(via_ray) == search_summary(local)


def test_cli_ray_flag_on_the_cluster(local_cluster, capsys):
    args = [
        "plan", "--model", "llama-7b", "--num-gpus-per-node", "2", "--num-requests", "16",
        "--prompt-len", "128", "--output-len", "32", "--all", "--quiet",
    ]  # fmt: skip
    assert main(args) == 0
    local = capsys.readouterr().out
    assert main([*args, "--ray", local_cluster]) == 0
    assert capsys.readouterr().out == local

"""Benchmark at scale: every plan of a 1.8-trillion-parameter MoE and of a 1T dense model on
clusters of 64 to 1024 H100s (nodes of 8), static default workload (1024 requests of 2048 prompt
and 128 output tokens, all at t = 0).

Models: bench/models/dense-1t.json (0.99 T parameters: 128 layers, hidden 25600, GQA, SwiGLU)
and bench/models/moe-1.8t.json (1.78 T: 16 experts, top-2, 120 layers, hidden 12288), loaded with
`apex_fast.models.load_model(path)`.

Prints per cluster: plans considered, feasible, best plan and its latency, time; then the total.
Usage: python bench/trillion.py [--workers N | --ray ADDRESS] [--sizes 64 128 ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.search import MetricOptions, search
from apex_fast.sim.engine import EngineOptions
from apex_fast.workload import static_workload

HERE = Path(__file__).resolve().parent
MODELS = (HERE / "models" / "moe-1.8t.json", HERE / "models" / "dense-1t.json")
SIZES = (64, 128, 256, 512, 1024)
GPUS_PER_NODE = 8


def sweep(path: Path, sizes: list[int], workers: int | None, ray: str | None = None) -> dict:
    model = load_model(str(path))
    kind = "MoE" if model.is_moe else "dense"
    print(
        f"{model.name}: {kind}, {model.params_total() / 1e12:.2f} T parameters "
        f"({model.params_active() / 1e12:.2f} T active), {model.num_layers} layers, "
        f"hidden {model.hidden_size}"
    )
    workload = static_workload(1024, 2048, 128)
    device = get_device("H100-SXM-80GB")
    out = {"model": model.name, "clusters": []}
    t_model = time.perf_counter()
    for g in sizes:
        cluster = Cluster(device, g // GPUS_PER_NODE, GPUS_PER_NODE)
        t0 = time.perf_counter()
        try:
            sr = search(
                model,
                cluster,
                workload,
                EngineOptions(),
                MetricOptions(),
                workers=workers,
                ray_address=ray,
            )
        except ApexError as e:
            dt = time.perf_counter() - t0
            print(f"  {g:5d} GPUs: no feasible plan ({e}) [{dt:.2f} s]")
            out["clusters"].append({"gpus": g, "feasible": 0, "seconds": dt})
            continue
        dt = time.perf_counter() - t0
        considered = sr.num_candidates + (len(sr.infeasible) - (sr.num_candidates - len(sr.ranked)))
        best = sr.best
        m = best.metrics
        assert m is not None
        print(
            f"  {g:5d} GPUs: {considered:3d} plans considered, {sr.num_candidates:3d} simulated, "
            f"{len(sr.ranked):3d} feasible; best {best.result.plan.label:<18s} mean latency "
            f"{m.latency_mean_s:7.3f} s, TTFT {m.ttft_mean_s * 1e3:8.1f} ms, "
            f"{m.throughput_tokens_per_s:9.0f} tok/s  [{dt:.2f} s]"
        )
        out["clusters"].append(
            {
                "gpus": g,
                "considered": considered,
                "simulated": sr.num_candidates,
                "feasible": len(sr.ranked),
                "best": best.result.plan.label,
                "latency_mean_s": m.latency_mean_s,
                "seconds": dt,
            }
        )
    out["seconds"] = time.perf_counter() - t_model
    print(f"  {model.name} total {out['seconds']:.2f} s")
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="simulate the plans on a Ray cluster: auto, local, or an address (docs/ray.md)",
    )
    ap.add_argument("--json", action="store_true", help="also print one JSON line of figures")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = [sweep(p, a.sizes, a.workers, a.ray) for p in MODELS]
    total = time.perf_counter() - t0
    print(f"total {total:.2f} s (wall, this process, incl. Numba cache load)")
    fig = {"trillion_total_s": total, "results": results}
    if a.json:
        print(json.dumps(fig))
    return fig


if __name__ == "__main__":
    main()

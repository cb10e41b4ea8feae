"""Speculative decoding speed-up by batch size (docs/speculative.md, EAGLE comparison).

llama2-70b, TP4 on 4 x A100-SXM-80GB, static batches of 128-token prompts and 256-token outputs,
an EAGLE chain of K = 5 at acceptance rates 0.70, 0.75 and 0.80: mean TPOT without and with
speculation, their ratio, and the throughput ratio.

Usage: python bench/speculative.py
"""

from __future__ import annotations

from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.metrics.summary import compute_metrics
from apex_fast.models import load_model
from apex_fast.plans.enumerate import megatron_plan
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.sim.speculative import SpeculativeConfig
from apex_fast.workload import static_workload


def main() -> None:
    model = load_model("llama2-70b")
    cluster = Cluster(get_device("A100-SXM-80GB"), 1, 4)
    plan = megatron_plan(model, 1, 1, 4, "half", "half", "half")
    for a in (0.7, 0.75, 0.8):
        spec = SpeculativeConfig("eagle", 5, (a,))
        for n in (1, 8, 32, 128):
            wl = static_workload(n, 128, 256)
            base = compute_metrics(
                simulate_plan(model, cluster, plan, wl, EngineOptions()), wl, cluster
            )
            res = simulate_plan(model, cluster, plan, wl, EngineOptions(speculative=spec))
            s = compute_metrics(res, wl, cluster)
            print(
                f"A={a:.2f} E={spec.expected_tokens:.2f} batch {n:3d}: TPOT "
                f"{base.tpot_mean_s * 1e3:6.2f} -> {s.tpot_mean_s * 1e3:6.2f} ms, speed-up "
                f"{base.tpot_mean_s / s.tpot_mean_s:.2f}x, throughput x"
                f"{s.throughput_tokens_per_s / base.throughput_tokens_per_s:.2f}"
            )


if __name__ == "__main__":
    main()

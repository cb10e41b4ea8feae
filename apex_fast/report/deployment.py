"""Text and JSON for disaggregated deployments and the aggregated-vs-disaggregated comparison."""

from __future__ import annotations

import math

from apex_fast.disagg.deployment import Deployment
from apex_fast.disagg.evaluate import DisaggCandidate
from apex_fast.disagg.rating import SLO_ATTAINMENT_TARGET
from apex_fast.report.text import table


def _ms(x: float) -> str:
    return f"{x * 1e3:.2f}" if math.isfinite(x) else "-"


def candidate_rows(c: DisaggCandidate) -> list[list[str]]:
    m = c.metrics
    return [
        ["Split (prefill x decode instances)", c.split, ""],
        ["Prefill pool", f"{c.prefill.label}, {c.prefill.gpus} GPU(s)", ""],
        ["Decode pool", f"{c.decode.label}, {c.decode.gpus} GPU(s)", ""],
        ["Prefill pool utilisation", f"{m.prefill_util_pct:.1f}", "%"],
        ["Decode pool utilisation", f"{m.decode_util_pct:.1f}", "%"],
        [
            "KV link",
            f"{c.link.kind}, {c.link.lanes} lane(s) x {c.link.gbps_per_lane:g} GB/s "
            f"+ {c.link.latency_s * 1e3:g} ms",
            "",
        ],
        [
            "KV transfer: mean / p95 / max",
            f"{_ms(m.transfer_mean_s)} / {_ms(m.transfer_p95_s)} / {_ms(m.transfer_max_s)}",
            "msec",
        ],
        ["KV transferred", f"{m.transfer_total_gb:.2f}", "GB"],
        ["Arrival to prefill done (mean)", _ms(m.prefill_mean_s), "msec"],
        ["TTFT mean / p95", f"{_ms(m.ttft_mean_s)} / {_ms(m.ttft_p95_s)}", "msec"],
        ["TPOT mean", _ms(m.tpot_mean_s), "msec"],
        ["Latency mean / p95", f"{m.latency_mean_s:.3f} / {m.latency_p95_s:.3f}", "sec"],
        ["Throughput", f"{m.throughput_tokens_per_s:.1f}", "tokens/sec"],
        [
            "SLOs met (TTFT / TPOT / both)",
            f"{m.slo_ttft_pct:.1f} / {m.slo_tpot_pct:.1f} / {m.slo_both_pct:.1f}",
            "%",
        ],
        ["Decode preemptions", str(m.preemptions), ""],
    ]


def render_deployment(d: Deployment, top: int = 5) -> str:
    ds = d.disagg
    best = d.best_disagg
    c = best.candidate
    slo = (
        f"goodput = the highest request rate (the trace replayed faster or slower) at which "
        f"{SLO_ATTAINMENT_TARGET:.0%} of the requests meet TTFT <= {d.ttft_slo_ms:g} ms and "
        f"TPOT <= {d.tpot_slo_ms:g} ms (DistServe's measure)"
    )
    lines = [
        f"* Disaggregated prefill/decode: {ds.num_candidates} pool configurations simulated, "
        f"{len(ds.ranked)} feasible deployments; {slo}",
        f"* Best disaggregated deployment: {c.label}",
        table(["Name", "Value", "Units"], candidate_rows(c)),
        f"  Goodput: {best.max_rate_rps:.3f} requests/sec ({best.max_rate_per_gpu:.4f} per GPU, "
        f"the trace at {best.rate_multiplier:.2f}x its rate)"
        if ds.ranked and d.workload.arrival[-1] > d.workload.arrival[0]
        else f"  Goodput: {best.max_rate_rps:.3f} requests/sec ({best.max_rate_per_gpu:.4f} per GPU; "
        "all requests arrive at once, so this is the goodput of that batch, not a rate search)",
    ]
    rows = []
    for cand in ds.ranked[:top]:
        m = cand.metrics
        rows.append(
            [
                cand.label,
                str(m.gpus),
                f"{m.goodput_per_gpu:.4f}",
                _ms(m.ttft_mean_s),
                _ms(m.tpot_mean_s),
                _ms(m.transfer_mean_s),
            ]
        )
    lines.append("* Disaggregated deployments at the trace's rate (best first):")
    lines.append(
        table(
            ["Deployment", "GPUs", "Good req/s/GPU", "TTFT ms", "TPOT ms", "KV xfer ms"],
            rows,
        )
    )
    if d.best_agg is not None:
        lines.append(comparison(d))
    return "\n".join(lines)


def comparison(d: Deployment) -> str:
    a = d.best_agg
    b = d.best_disagg
    assert a is not None
    am = a.evaluated.metrics
    bm = b.candidate.metrics
    rows = [
        ["Plan", a.label, b.label],
        ["GPUs", str(a.gpus), str(bm.gpus)],
        ["Goodput (req/s)", f"{a.max_rate_rps:.3f}", f"{b.max_rate_rps:.3f}"],
        ["Goodput per GPU (req/s)", f"{a.max_rate_per_gpu:.4f}", f"{b.max_rate_per_gpu:.4f}"],
        ["At the trace's rate: TTFT mean (ms)", _ms(am.ttft_mean_s), _ms(bm.ttft_mean_s)],
        ["At the trace's rate: TPOT mean (ms)", _ms(am.tpot_mean_s), _ms(bm.tpot_mean_s)],
        [
            "At the trace's rate: latency mean (s)",
            f"{am.latency_mean_s:.3f}",
            f"{bm.latency_mean_s:.3f}",
        ],
        ["At the trace's rate: SLOs met (%)", f"{am.slo_both_pct:.1f}", f"{bm.slo_both_pct:.1f}"],
    ]
    ga, gb = a.max_rate_per_gpu, b.max_rate_per_gpu
    if d.winner == "disagg":
        ratio = gb / ga if ga > 0 else math.inf
        verdict = f"disaggregated wins: {ratio:.2f}x the goodput per GPU of aggregated"
    else:
        ratio = ga / gb if gb > 0 else math.inf
        verdict = f"aggregated wins: {ratio:.2f}x the goodput per GPU of disaggregated"
    return "\n".join(
        [
            "* Aggregated vs disaggregated (best of each by goodput per GPU):",
            table(["", "Aggregated", "Disaggregated"], rows),
            f"  Verdict: {verdict}",
        ]
    )


def candidate_json(c: DisaggCandidate) -> dict:
    return {
        "label": c.label,
        "split": c.split,
        "prefill": {
            "plan": c.prefill.plan.to_json(),
            "label": c.prefill.plan.label,
            "instances": c.prefill.instances,
            "gpus": c.prefill.gpus,
        },
        "decode": {
            "plan": c.decode.plan.to_json(),
            "label": c.decode.plan.label,
            "instances": c.decode.instances,
            "gpus": c.decode.gpus,
        },
        "kv_link": {
            "kind": c.link.kind,
            "lanes": c.link.lanes,
            "gbps_per_lane": c.link.gbps_per_lane,
            "latency_s": c.link.latency_s,
        },
        "metrics": c.metrics.to_json(),
    }


def deployment_json(d: Deployment, top: int = 10) -> dict:
    b = d.best_disagg
    out: dict = {
        "mode": d.mode,
        "slo_attainment_target": SLO_ATTAINMENT_TARGET,
        "disaggregated": {
            "best": {
                **candidate_json(b.candidate),
                "goodput_rps": b.max_rate_rps,
                "goodput_per_gpu": b.max_rate_per_gpu,
                "rate_multiplier": b.rate_multiplier,
            },
            "ranked": [candidate_json(c) for c in d.disagg.ranked[:top]],
            "num_candidates": d.disagg.num_candidates,
            "infeasible": [{"pools": a, "reason": r} for a, r in d.disagg.infeasible[:50]],
        },
    }
    if d.best_agg is not None:
        a = d.best_agg
        out["aggregated"] = {
            "label": a.label,
            "gpus": a.gpus,
            "goodput_rps": a.max_rate_rps,
            "goodput_per_gpu": a.max_rate_per_gpu,
            "rate_multiplier": a.rate_multiplier,
        }
        out["winner"] = d.winner
        ga, gb = a.max_rate_per_gpu, b.max_rate_per_gpu
        lo = min(ga, gb)
        out["winner_ratio"] = max(ga, gb) / lo if lo > 0 else None
    return out

"""`apex.py capacity`: the highest request rate each plan sustains within the SLOs.

The search itself is apex_fast/capacity.py; this module parses the options (shared ones from
apex_fast/cli/options.py), ranks the plans with one ordinary `plan` search and prints the table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from apex_fast.cli import options as o
from apex_fast.cli.checks import check_output_path, check_trace_file, compile_note
from apex_fast.engines.options import LaunchSettings
from apex_fast.errors import ApexError
from apex_fast.request import PlanRequest as R

# ------------------------------------------------------------- options of `capacity` only
CapacityTraceFile = Annotated[
    Path | None,
    typer.Option(
        "--trace-file",
        help="Request trace whose arrival times are scaled (e.g. traces/lmsys_r2_n300.jsonl); "
        "without one, synthetic requests (--length-dist, --prompt-len, --output-len).",
    ),
]
Attainment = Annotated[
    float, o.real("Fraction of requests that must meet both SLOs (0-1].", min=0, max=1)
]
Top = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Evaluate the best N plans (ranked at the trace's rate); default: every feasible plan.",
    ),
]
AllPlans = Annotated[
    bool,
    typer.Option("--all", help="Evaluate every feasible plan (the default; overrides --top)."),
]
RelTol = Annotated[float, o.real("Relative width of the final rate bracket (0-1).", min=0, max=1)]

CAPACITY_REQUESTS = 1000  # synthetic requests without a trace file (then arrivals at 1 req/s)
_L = LaunchSettings


def capacity(
    model: o.Model,
    num_gpus_per_node: o.GpusPerNode,
    num_nodes: o.NumNodes = R.num_nodes,
    gpu: o.Gpu = R.gpu,
    frequency: o.Frequency = R.frequency,
    inter_node_bandwidth: o.InterNodeBandwidth = R.inter_node_gbps,
    trace_file: CapacityTraceFile = R.trace_file,
    ttft_slo: o.TtftSlo = 200.0,
    tpot_slo: o.TpotSlo = 50.0,
    attainment: Attainment = 0.9,
    top: Top = None,
    all_plans: AllPlans = False,
    objective: o.ObjectiveOpt = o.Objective[R.objective],
    rel_tol: RelTol = 0.02,
    tp: o.Tp = R.tp,
    pp: o.Pp = R.pp,
    dp: o.Dp = R.dp,
    max_num_seqs: o.MaxNumSeqs = _L.max_num_seqs,
    max_num_batched_tokens: o.MaxNumBatchedTokens = _L.max_num_batched_tokens,
    chunked_prefill: o.ChunkedPrefill = _L.chunked_prefill,
    json_path: o.JsonPath = None,
    num_requests: o.NumRequests = CAPACITY_REQUESTS,
    prompt_len: o.PromptLen = R.prompt_len,
    output_len: o.OutputLen = R.output_len,
    length_dist: o.LengthDistOpt = None,
    random_range_ratio: o.RandomRangeRatio = R.random_range_ratio,
    burstiness: o.Burstiness = R.burstiness,
    seed: o.Seed = R.seed,
) -> None:
    """Highest request rate each plan sustains within the TTFT/TPOT SLOs (scaled trace)."""
    p = dict(locals())
    for flag, v in (("--ttft-slo", ttft_slo), ("--tpot-slo", tpot_slo)):
        if v is None or v <= 0:
            raise ApexError(f"{flag} must be > 0 ms for capacity, got {v}")
    from apex_fast.limits import check_cluster_size

    check_cluster_size(num_nodes, num_gpus_per_node)
    check_trace_file(trace_file)
    if json_path is not None:
        check_output_path(json_path, "--json")
    compile_note()
    t0 = time.perf_counter()
    from apex_fast.capacity import CapacitySearch
    from apex_fast.planner import run_plan

    _, sr = run_plan(_request(p))  # ranks the plans at the trace's own rate (one simulation each)
    chosen = sr.ranked if all_plans or top is None else sr.ranked[:top]
    cs = CapacitySearch(
        sr.model, sr.cluster, sr.workload, sr.options, ttft_slo, tpot_slo, attainment, rel_tol
    )
    caps = [cs.run(e.result.plan) for e in chosen]
    caps.sort(key=lambda c: (-c.scale, c.plan.label))
    typer.echo(_report(p, sr, cs, caps, len(chosen), time.perf_counter() - t0))
    if json_path is not None:
        _write_json(p, sr, cs, caps)


def _request(p: dict[str, Any]) -> R:
    from apex_fast.cli.plan_request import shared_fields

    return R(
        **shared_fields(p),
        # without a trace: synthetic requests at 1 req/s, whose arrival times are then scaled
        request_rate=None if p["trace_file"] is not None else 1.0,
        ttft_slo_ms=p["ttft_slo"],
        tpot_slo_ms=p["tpot_slo"],
        launch=LaunchSettings(
            max_num_seqs=p["max_num_seqs"],
            max_num_batched_tokens=p["max_num_batched_tokens"],
            chunked_prefill=p["chunked_prefill"],
        ),
    )


def _report(p: dict[str, Any], sr, cs, caps: list, chosen: int, seconds: float) -> str:  # noqa: ANN001
    from apex_fast.capacity import HORIZON_LIFETIMES, MAX_SCALE_STEPS, format_table
    from apex_fast.validation.bands import band_line, search_band
    from apex_fast.workload.scaling import MAX_REQUESTS

    c, w, f = sr.cluster, sr.workload, p["frequency"]
    target = p["attainment"]
    return "\n".join(
        [
            f"Model: {sr.model.name}; cluster: {c.num_nodes} node(s) x {c.gpus_per_node} "
            f"{c.device.name}" + (f" at {f} MHz" if f else ""),
            f"Trace: {w.name}: {w.num_requests} requests at {cs.base_rate:.3f} req/s on average "
            f"(arrival times scaled to change the rate; the trace is repeated back to back, up "
            f"to {MAX_REQUESTS:,} requests, aiming to span {cs.horizon_s:.0f} s = "
            f"{HORIZON_LIFETIMES:g} request lifetimes at the SLOs, so overload shows)",
            f"SLOs: TTFT <= {p['ttft_slo']:g} ms and TPOT <= {p['tpot_slo']:g} ms for at least "
            f"{100 * target:g}% of requests; evaluated {chosen} of {len(sr.ranked)} "
            f"feasible plans (best by {sr.objective} at the trace's rate)",
            format_table(caps, target),
            band_line(search_band(sr)),
            f"{cs.total_simulations} simulations in {seconds:.2f} s "
            f"(bracketing from earlier plans' answers, then narrowing to "
            f"{100 * p['rel_tol']:g}%; '>=' = still met at {2**MAX_SCALE_STEPS}x the trace's "
            "rate, the plan was never saturated)",
        ]
    )


def _write_json(p: dict[str, Any], sr, cs, caps: list) -> None:  # noqa: ANN001
    import orjson

    from apex_fast.report.jsonout import write_atomic
    from apex_fast.validation.bands import band_rel_json, search_band

    data = {
        "model": sr.model.name,
        "trace": sr.workload.name,
        "base_rate_req_s": cs.base_rate,
        "ttft_slo_ms": p["ttft_slo"],
        "tpot_slo_ms": p["tpot_slo"],
        "attainment": p["attainment"],
        "accuracy": band_rel_json(search_band(sr)),
        "plans": [
            {
                "plan": x.plan.label,
                "max_rate_req_s": x.max_rate,
                "scale": x.scale,
                "bounded": x.bounded,
                "attainment_at_max": x.outcome.attainment if x.outcome else None,
                "goodput_req_s": x.outcome.goodput_req_s if x.outcome else None,
                "simulations": x.simulations,
            }
            for x in caps
        ],
    }
    path = p["json_path"]
    try:
        write_atomic(path, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    except OSError as err:
        raise ApexError(f"cannot write {path}: {err.strerror}") from None

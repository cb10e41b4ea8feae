"""Text report in the layout of the APEX+ README: plan table, statistics, performance metrics,
SLO table, time breakdown and energy, best plan first."""

from __future__ import annotations

import math

from apex_fast import cells as names
from apex_fast.engines.describe import engine_summary
from apex_fast.metrics.summary import PlanMetrics, _fmt_p
from apex_fast.models.quant import weight_dtype_label
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.memory import kv_heads_per_device
from apex_fast.plans.plan import Plan
from apex_fast.report.table import table
from apex_fast.search import Evaluated, SearchResult
from apex_fast.validation.bands import band_line, search_band

RULE = "=" * 80
MINUS = "\u2212"  # typographic minus for the trade line


def _cell_rows(model: ModelSpec, plan: Plan) -> list[list[str]]:
    """One row per cell and one per collective, in block order (the seed's plan table)."""
    rows: list[list[str]] = []
    for cell in plan.cells:
        if cell.cell == names.PLAN_ATTENTION:
            q = model.num_heads // cell.degree
            kv = kv_heads_per_device(model, cell.degree)
            rep = " (KV heads replicated)" if cell.degree > model.num_kv_heads else ""
            name = names.attention_name(model.num_heads, model.num_kv_heads)
            detail = f"{q} query heads, {kv} KV heads per device{rep}"
            if model.is_mla:
                name, detail = names.MLA_NAME, f"{q} heads per device, latent KV cache replicated"
            rows.append([name, f"{cell.describe()}: {detail}"])
        elif cell.cell == names.PLAN_MOE:
            per = model.num_experts // max(plan.ep, 1)
            split = f", each split x{plan.ffn_tp}" if plan.ffn_tp > 1 else ""
            rows.append(
                [
                    names.MOE,
                    f"{model.num_experts} experts, top-{model.topk}: {per} per device"
                    f"{split} ({model.moe_intermediate_size // plan.ffn_tp} columns)",
                ]
            )
        else:
            name = names.ffn_name(False, model.gated_ffn)
            detail = f"{model.intermediate_size // cell.degree} FFN columns per device"
            rows.append([name, f"{cell.describe()}: {detail}"])
        for c in plan.collectives:
            if c.after == cell.cell and c.group > 1:
                extra = f" (x{c.size_factor:g} tokens)" if c.kind == names.ALL_TO_ALL else ""
                rows.append([c.title, f"{c.group} devices{extra}"])
    if plan.pp > 1:
        rows.append([names.COLLECTIVE_TITLES[names.SEND_RECV], f"between {plan.pp} stages"])
    return rows


def _weights(model: ModelSpec, plan: Plan) -> str:
    """The plan's weight dtype, with the linears the checkpoint keeps unquantised."""
    mp = model.mixed_precision
    return weight_dtype_label(mp, plan.weight_dtype, model.num_layers, model.is_moe)


def _v(x: float, scale: float = 1.0, fmt: str = "{:.3f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return fmt.format(x * scale)


def plan_section(
    model: ModelSpec, e: Evaluated, title: str, max_batch: int, slo_ms: tuple[float, float]
) -> str:
    m: PlanMetrics = e.metrics  # type: ignore[assignment]
    p = e.result.plan
    out = [f"* {title}:"]
    out.append(f"  # Model replicas: {p.dp}")
    out.append(f"  # Stages: {p.pp}")
    lps = sorted(set(p.layers_per_stage))
    out.append(f"  # Blocks per stage: {'/'.join(str(x) for x in reversed(lps))}")
    out.append(
        f"  # Plan: {p.label}  (dtypes: weights {_weights(model, p)}, activations "
        f"{p.activation_dtype}, KV {p.kv_dtype})"
    )
    out.append(table(["Name", "Value"], _cell_rows(model, p)))
    out.append("* Statistics:")
    encoder = model.arch == "encoder"
    stats = [
        ["Parameter size per device (GiB)", f"{m.param_gb_per_device:.1f}"],
        ["Activation memory per device (GiB)", f"{m.activation_gb_per_device:.1f}"],
    ]
    if not encoder:  # an encoder keeps no KV cache between steps
        stats.append(["KV cache per device (GiB)", f"{m.kv_cache_gb_per_device:.1f}"])
        copies = getattr(m, "attn_copies", 1)
        if copies > 1:
            stats.append(
                [
                    "KV cache capacity per attention copy (tokens)",
                    f"{m.kv_tokens_per_copy}",
                ]
            )
            stats.append(
                [
                    f"KV cache capacity per replica (tokens, {copies} copies)",
                    f"{m.kv_tokens_per_replica}",
                ]
            )
        else:
            stats.append(["KV cache capacity per replica (tokens)", f"{m.kv_tokens_per_replica}"])
    stats += [
        ["Avg. requests per iteration (per microbatch)", f"{m.avg_requests_per_iteration:.1f}"],
        ["Avg. tokens per iteration (per microbatch)", f"{m.avg_tokens_per_iteration:.1f}"],
        ["Simulated iterations", f"{m.num_steps}"],
    ]
    if not encoder:
        stats.append(["Preemptions (recompute)", f"{m.preemptions}"])
    out.append(table(["Name", "Value"], stats))
    rows = (
        []
        if encoder
        else [
            [
                "Throughput: Avg. Tokens generated per second",
                _v(m.throughput_tokens_per_s),
                "tokens/sec",
            ],
        ]
    )
    rows += [
        [
            "Throughput: Avg. Tokens processed per second",
            _v(m.processed_tokens_per_s),
            "tokens/sec",
        ],
        ["Throughput: Requests per second", _v(m.throughput_requests_per_s), "requests/sec"],
        ["Latency: Avg. Time to first token (TTFT in msec)", _v(m.ttft_mean_s, 1e3), "msec"],
        ["Latency: Avg. Time per output token (TPOT in msec)", _v(m.tpot_mean_s, 1e3), "msec"],
        [
            "Latency: Inter-token latency, token-weighted (ITL in msec)",
            _v(m.itl_mean_s, 1e3),
            "msec",
        ],
    ]
    for pct, val in m.tbt_percentiles_s.items():
        rows.append([f"Avg. TBT Percentile: P{_fmt_p(pct)}", _v(val, 1e3), "msec"])
    for pct, val in m.latency_percentiles_s.items():
        rows.append([f"Request Completion Latency: {_fmt_p(pct)}th percentile", _v(val), "sec"])
    rows.append(["Avg. MFU Per iteration", _v(m.mfu, 100.0), "%"])
    rows.append(["MBU", _v(m.mbu, 100.0), "%"])
    out.append("* Performance Metrics:")
    rows = [r for r in rows if r[1] != "nan"]  # e.g. TPOT of an encoder, which emits no tokens
    out.append(table(["Name", "Value", "Units"], rows))
    out.append(benchmark_section(m, slo_ms))
    out.append(slo_section(model, m, max_batch, slo_ms))
    out.append("* Time breakdown:")
    brow = []
    for name, sec, ratio, src in m.breakdown:
        brow.append([name, f"{sec:.2f}", f"{ratio:.1f}", src])
    out.append(table(["Name", "Time (sec)", "Ratio (%)", "Source"], brow))
    out.append(energy_line(m, "request" if encoder else "generated token"))
    return "\n".join(out)


def benchmark_section(m: PlanMetrics, slo_ms: tuple[float, float]) -> str:
    """The metrics as `vllm bench serve` names and defines them (docs/metrics.md): mean,
    median, P99 and the asked-for percentiles, in ms; throughputs and goodput."""
    lat = [
        ("TTFT", m.ttft_mean_s, m.ttft_percentiles_s),
        ("TPOT", m.tpot_mean_s, m.tpot_percentiles_s),
        ("ITL", m.itl_mean_s, m.itl_percentiles_s),
        ("E2E latency", m.latency_mean_s, {**m.latency_percentiles_s, 99.0: m.latency_p99_s}),
    ]
    req_ps = [p for p in m.ttft_percentiles_s if p != 50.0]
    tok_ps = [p for p in m.itl_percentiles_s if p != 50.0]
    cols = sorted(set(req_ps) | set(tok_ps))
    rows = []
    for name, mean, ps in lat:
        if mean is None or not math.isfinite(mean):
            continue  # e.g. TPOT and ITL of an encoder
        rows.append(
            [f"{name} (ms)", _v(mean, 1e3, "{:.2f}"), _v(ps.get(50.0, math.nan), 1e3, "{:.2f}")]
            + [_v(ps[p], 1e3, "{:.2f}") if p in ps else "" for p in cols]
        )
    head = ["Metric", "Mean", "Median", *[f"P{_fmt_p(p)}" for p in cols]]
    tput = [
        ["Successful requests", f"{m.completed_requests}", ""],
        ["Request throughput", _v(m.throughput_requests_per_s), "req/s"],
        ["Output token throughput", _v(m.output_tokens_per_s, fmt="{:.2f}"), "tok/s"],
        ["Total token throughput", _v(m.total_tokens_per_s, fmt="{:.2f}"), "tok/s"],
    ]
    if any(math.isfinite(x) for x in slo_ms):
        tput.append(
            [
                f"Goodput (TTFT <= {slo_ms[0]:g} ms and TPOT <= {slo_ms[1]:g} ms)",
                _v(m.goodput_requests_per_s),
                "req/s",
            ]
        )
    if m.prefix_cache == "on":
        tput.append(["Prefix cache hit rate", f"{100 * m.prefix_cache_hit_rate:.2f}", "%"])
        tput.append(["Cached prompt tokens", f"{m.cached_prompt_tokens}", "tokens"])
    elif m.prefix_cache != "off":
        tput.append(["Prefix cache", m.prefix_cache, ""])
    return "\n".join(
        [
            "* Serving benchmark metrics (vllm bench serve definitions, docs/metrics.md):",
            table(head, rows),
            table(["Name", "Value", "Units"], tput),
        ]
    )


def slo_section(
    model: ModelSpec, m: PlanMetrics, max_batch: int, slo_ms: tuple[float, float]
) -> str:
    """Attainment of the SLOs the user set (none by default)."""
    head = [
        "* Latency SLO Metrics:",
        f"* Max running sequences per engine (--max-num-seqs): {max_batch}",
    ]
    ttft, tpot = (math.isfinite(x) for x in slo_ms)
    if model.arch == "encoder":
        rows = [["Encoder latency (TTFT)", f"{slo_ms[0]:g}", f"{m.slo_ttft_pct:.3f} %"]]
        rows = rows if ttft else []
    else:
        rows = []
        if ttft:
            rows.append(["TTFT", f"{slo_ms[0]:g}", f"{m.slo_ttft_pct:.3f} %"])
        if tpot:
            rows.append(["TPOT", f"{slo_ms[1]:g}", f"{m.slo_tpot_pct:.3f} %"])
        if ttft and tpot:
            rows.append(["Both", "", f"{m.slo_both_pct:.3f} %"])
    if not rows:
        head.append("  No SLO set (give --ttft-slo and/or --tpot-slo in ms to see attainment)")
        return "\n".join(head)
    return "\n".join([*head, table(["Name", "Target SLO(msec)", "SLOs Met(%)"], rows)])


def energy_line(m: PlanMetrics, per: str = "generated token") -> str:
    """kJ with J/token beside it, and $/Mtok when a GPU-hour price was given."""
    line = f"Energy Consumption: {m.energy_kj:.2f} KJ ({m.energy_j_per_token:.3f} J per {per}"
    gpus_s = m.gpu_hours * 3600.0
    if gpus_s > 0:
        line += f", avg. {m.energy_kj * 1e3 / gpus_s:.0f} W per GPU"
    line += ")"
    if math.isfinite(m.cost_usd_per_mtok):
        line += (
            f"\nCost: ${m.cost_usd_per_mtok:.3f} per million generated tokens "
            f"(${m.gpu_hour_cost:g} per GPU-hour, {m.gpu_hours:.3f} GPU-hours)"
        )
    return line


def _pct(new: float, old: float) -> str:
    if not (math.isfinite(new) and math.isfinite(old)) or old == 0:
        return "n/a"
    d = 100.0 * (new - old) / abs(old)
    sign = "+" if d >= 0 else MINUS
    return f"{sign}{abs(d):.0f}%"


def trade_line(sr: SearchResult) -> str | None:
    """'Trade vs the latency-optimal plan: -30% energy, +12% TPOT, ...' when the objective is
    not latency."""
    if sr.objective == "latency" or not sr.ranked:
        return None
    from apex_fast.search import objective_key

    lat = min(sr.ranked, key=objective_key("latency"))
    best = sr.best
    if lat is best:
        return f"Trade: the {sr.objective}-optimal plan is also the latency-optimal plan."
    a, b = best.metrics, lat.metrics
    assert a is not None and b is not None
    parts = [
        f"{_pct(a.energy_kj, b.energy_kj)} energy",
        f"{_pct(a.tpot_mean_s, b.tpot_mean_s)} TPOT",
        f"{_pct(a.ttft_mean_s, b.ttft_mean_s)} TTFT",
        f"{_pct(a.latency_mean_s, b.latency_mean_s)} request latency",
        f"{_pct(a.throughput_tokens_per_s, b.throughput_tokens_per_s)} throughput",
    ]
    if math.isfinite(a.cost_usd_per_mtok) and math.isfinite(b.cost_usd_per_mtok):
        parts.append(f"{_pct(a.cost_usd_per_mtok, b.cost_usd_per_mtok)} $/Mtok")
    return (
        f"Trade vs the latency-optimal plan {lat.result.plan.label}: "
        f"{', '.join(parts)} ({best.result.plan.label}, ranked by {sr.objective})"
    )


def _cost_source(sr: SearchResult) -> str:
    """Which measured tables / model the best plan's op costs came from."""
    cc = sr.best.result.compiled if sr.ranked else None
    return getattr(cc, "cost_source", None) or (
        "analytic device model (roofline with fitted efficiencies; see docs/device_model.md)"
    )


def speculative_lines(o: object) -> list[str]:
    """One line on speculative decoding when it is on (apex_fast.sim.speculative)."""
    spec = getattr(o, "speculative", None)
    if spec is None:
        return []
    return [
        f"Speculative decoding: {spec.describe()}; mean accepted tokens per step "
        f"{spec.expected_tokens:.2f} (docs/speculative.md)"
    ]


def render(
    sr: SearchResult, show_all: bool, ttft_slo_ms: float, tpot_slo_ms: float, max_batch: int
) -> str:
    model = sr.model
    c = sr.cluster
    o = sr.options
    w = sr.workload
    stage = "encoder" if model.arch == "encoder" else "decoder"
    head: list[str] = []
    if sr.encoder is not None:
        head = [
            "*** Encoder (planned and simulated first; its completion times are the decoder's "
            "arrivals) ***",
            render(sr.encoder, False, ttft_slo_ms, tpot_slo_ms, max_batch),
            "*** Decoder ***",
        ]
    lines = [
        *head,
        f"Model: {model.name} ({model.params_total() / 1e9:.2f} B parameters; {model.num_layers} layers, "
        f"hidden {model.hidden_size}, {model.num_heads} heads, {model.num_kv_heads} KV heads, "
        + (
            f"{model.num_experts} experts top-{model.topk} of width {model.moe_intermediate_size})"
            if model.is_moe
            else f"FFN {model.intermediate_size} {'SwiGLU' if model.gated_ffn else 'MLP'})"
        ),
        f"Cluster: {c.num_nodes} node(s) x {c.gpus_per_node} {c.device.name}, SM clock "
        + (
            f"{o.clock_mhz} MHz (--frequency)"
            if o.clock_mhz
            else f"{c.device.boost_clock_mhz} MHz (boost, the default)"
        ),
        f"Workload: {w.name}: {w.num_requests} requests, mean prompt {w.prompt.mean():.1f}, "
        f"mean output {w.output.mean():.1f} tokens, over {float(w.arrival[-1]):.1f} s",
        f"Engine: {engine_summary(o, sr.best.result.budget)}",
        *speculative_lines(o),
        f"Op costs: {_cost_source(sr)}",
        f"Generated {len(sr.ranked) + len(sr.infeasible)} {stage} candidate plans: "
        f"{len(sr.ranked)} feasible, {len(sr.infeasible)} infeasible. Ranked by {sr.objective}.",
    ]
    lines.append(band_line(search_band(sr)))
    notes = sr.best.result.compiled.notes if sr.best.result.compiled else []
    for n in notes:
        lines.append(f"Note: {n}")
    trade = trade_line(sr)
    if trade:
        lines.append(trade)
    lines.append(RULE)
    chosen = sr.ranked if show_all else sr.ranked[:1]
    for i, e in enumerate(chosen):
        title = (
            f"Parallel schedule {i} for {stage}" if show_all else f"Optimal schedule for {stage}"
        )
        lines.append(plan_section(model, e, title, max_batch, (ttft_slo_ms, tpot_slo_ms)))
        lines.append(RULE)
    if show_all and sr.infeasible:
        lines.append("* Infeasible plans:")
        lines.append(table(["Plan", "Reason"], [[a, b] for a, b in sr.infeasible]))
    return "\n".join(lines)

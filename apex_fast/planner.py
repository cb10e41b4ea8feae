"""The `plan` use case: turn a PlanRequest (apex_fast/request.py) into model, cluster, workload
and engine settings, search the plans and render the report."""

from __future__ import annotations

import dataclasses

from apex_fast.dtypes import canonical_dtype
from apex_fast.encdec import encoder_options, encoder_view, request_finish
from apex_fast.engines.options import engine_option_fields
from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device, with_inter_node_bandwidth
from apex_fast.models import load_model
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.enumerate import Pins
from apex_fast.request import PlanRequest
from apex_fast.search import MetricOptions, SearchResult, search
from apex_fast.sim.engine import EngineOptions
from apex_fast.sim.prefix import check_router
from apex_fast.workload import Workload, WorkloadOptions
from apex_fast.workload import build_workload as workload_from_options
from apex_fast.workload.encoder_decoder import decoder_workload, encoder_workload


def build_workload(req: PlanRequest) -> Workload:
    return workload_from_options(workload_options(req))


def workload_options(req: PlanRequest) -> WorkloadOptions:
    """The request's workload fields (PlanRequest carries WorkloadOptions' fields by name)."""
    return WorkloadOptions(
        **{f.name: getattr(req, f.name) for f in dataclasses.fields(WorkloadOptions)}
    )


def _progress():
    """Rich progress bar on stderr for searches longer than a moment (the CLI decides whether
    progress is wanted at all: not with --quiet, not when stderr is not a terminal)."""
    from apex_fast.progress import SearchProgress

    return SearchProgress()


def run_plan(
    req: PlanRequest, show_all: bool = False, progress: bool = False, max_batch: int = 0
) -> tuple[str, SearchResult]:
    from apex_fast.report.text import render

    if req.weight_dtype is not None:
        canonical_dtype(req.weight_dtype, "--weight-dtype", allow_int=True)
    if req.activation_dtype is not None:
        canonical_dtype(req.activation_dtype, "--activation-dtype")
    canonical_dtype(req.kv_dtype, "--kv-dtype")
    model = load_model(req.model, num_experts=req.num_experts, topk=req.topk)
    native = model.native_weight_dtype if req.weight_dtype is None else ""
    dtypes = (
        canonical_dtype(req.weight_dtype or native or "half", "--weight-dtype", allow_int=True),
        canonical_dtype(req.activation_dtype or native or "half", "--activation-dtype"),
        canonical_dtype(req.kv_dtype, "--kv-dtype"),
    )
    if req.num_nodes < 1:
        raise ApexError(f"--num-nodes must be at least 1, got {req.num_nodes}")
    if req.gpus_per_node < 1:
        raise ApexError(f"--num-gpus-per-node must be at least 1, got {req.gpus_per_node}")
    device = with_inter_node_bandwidth(get_device(req.gpu), req.inter_node_gbps)
    cluster = Cluster(device, req.num_nodes, req.gpus_per_node)
    clock = None
    if req.frequency < 0:
        raise ApexError(
            f"--frequency must be 0 (boost clock) or a clock in MHz, got {req.frequency}"
        )
    if req.frequency:
        if req.frequency not in device.clocks_mhz:
            known = ", ".join(str(c) for c in device.clocks_mhz)
            raise ApexError(
                f"--frequency {req.frequency} MHz is not a clock of {device.name} ({known})"
            )
        clock = req.frequency
    workload = build_workload(req)
    wl_notes = workload.notes
    opts = EngineOptions(
        **engine_option_fields(
            req.launch,
            device.name,
            device.hbm_gb * 1e9 / 2**30,
            model.max_position_embeddings or None,
            req.tp,
        ),
        clock_mhz=clock,
        profile_dir=str(req.profile_dir) if req.profile_dir is not None else None,
        capacity_factor=req.capacity_factor,
        router=req.router,
        speculative=req.speculative,
    )
    check_router(req.router)
    if req.router == "prefix" and workload.max_concurrency:
        raise ApexError(
            "--router prefix is not modelled with --max-concurrency (each closed-loop client "
            "keeps its engine); use --request-rate or the trace's times"
        )
    mopts = MetricOptions(
        request_percentiles=req.request_percentiles,
        token_percentiles=req.token_percentiles,
        ttft_slo_ms=req.ttft_slo_ms,
        tpot_slo_ms=req.tpot_slo_ms,
    )
    pins = Pins(dp=req.dp, pp=req.pp, tp=req.tp, ep=req.ep)

    def run(m: ModelSpec, wl: Workload, o: EngineOptions, p: Pins) -> SearchResult:
        return search(
            m,
            cluster,
            wl,
            o,
            mopts,
            pins=p,
            dtypes=dtypes,
            objective=req.objective,
            progress=_progress() if progress else None,
            workers=req.workers,
            ray_address=req.ray_address,
        )

    if req.mode != "agg":  # disaggregated prefill/decode (apex_fast.disagg)
        return _run_deployment(req, model, cluster, workload, opts, mopts, dtypes, run, pins)
    encoder_sr = None
    if model.arch in ("encoder", "encoder-decoder") and workload.max_concurrency:
        raise ApexError(
            f"--max-concurrency is not modelled for {model.arch} models (the encoder and the "
            "decoder are simulated one after the other); use --request-rate"
        )
    if model.arch in ("encoder", "encoder-decoder"):
        enc_model = encoder_view(model)
        enc_wl = encoder_workload(model, workload)
        enc_opts = dataclasses.replace(
            encoder_options(opts, enc_wl.prompt),
            cross_kv_layers=model.num_layers if model.arch == "encoder-decoder" else 0,
        )
        enc_pins = pins if model.arch == "encoder" else Pins()
        encoder_sr = run(enc_model, enc_wl, enc_opts, enc_pins)
        if model.arch == "encoder":
            _energy_cost_outputs(req, encoder_sr)
            text = render(
                encoder_sr,
                show_all,
                req.ttft_slo_ms,
                req.tpot_slo_ms,
                max_batch or opts.max_num_seqs,
            )
            _request_outputs(req, encoder_sr)
            notes = "\n".join(f"Note: {n}" for n in workload.notes)
            return (f"{notes}\n{text}" if notes else text), encoder_sr
        workload = decoder_workload(model, workload, request_finish(encoder_sr.best.result))
    sr = run(model, workload, opts, pins)
    sr.encoder = encoder_sr
    _energy_cost_outputs(req, sr)
    text = render(sr, show_all, req.ttft_slo_ms, req.tpot_slo_ms, max_batch or opts.max_num_seqs)
    _request_outputs(req, sr)
    notes = [f"Note: {n}" for n in wl_notes] + [context_note(model, workload)]
    note = "\n".join(n for n in notes if n)
    return (f"{note}\n{text}" if note else text), sr


def _run_deployment(req, model, cluster, workload, opts, mopts, dtypes, run, pins):
    """`--mode disagg` (the disaggregated search alone) or `--mode both` (the aggregated report
    followed by the comparison)."""
    from apex_fast.disagg.deployment import MODES, plan_deployment
    from apex_fast.report.deployment import render_deployment
    from apex_fast.report.text import render, speculative_lines

    if req.mode not in MODES:
        raise ApexError(f"--mode must be one of {', '.join(MODES)}, got {req.mode!r}")
    sr = run(model, workload, opts, pins) if req.mode == "both" else None
    dep = plan_deployment(
        req.mode,
        model,
        cluster,
        workload,
        opts,
        mopts.ttft_slo_ms,
        mopts.tpot_slo_ms,
        dtypes,
        latency_ms=req.kv_transfer_latency_ms,
        agg_search=sr,
    )
    if sr is None:
        head = [
            f"Model: {model.name}",
            f"Cluster: {cluster.num_nodes} node(s) x {cluster.gpus_per_node} {cluster.device.name}",
            f"Workload: {workload.name}: {workload.num_requests} requests",
            *speculative_lines(opts),
        ]
        return "\n".join([*head, render_deployment(dep)]), dep
    _energy_cost_outputs(req, sr)
    text = render(sr, False, req.ttft_slo_ms, req.tpot_slo_ms, opts.max_num_seqs)
    sr.deployment = dep
    return f"{text}\n{render_deployment(dep)}", sr


def _request_outputs(req: PlanRequest, sr: SearchResult) -> None:
    """--requests-out (Parquet per-request timelines) and --plot-cdf (PNG) of the best plan."""
    if req.requests_out is None and req.plot_cdf is None:
        return
    from apex_fast.metrics.requests import plot_cdfs, request_table

    df = request_table(sr.best.result, sr.workload)
    if req.requests_out is not None:
        import polars as pl

        try:
            df.write_parquet(req.requests_out)
        except (OSError, pl.exceptions.PolarsError) as e:
            why = getattr(e, "strerror", None) or str(e).split(" (os error")[0]
            raise ApexError(f"--requests-out: cannot write {req.requests_out}: {why}") from None
    if req.plot_cdf is not None:
        plot_cdfs(df, req.plot_cdf, f"{sr.model.name}, {sr.best.result.plan.label}")


def context_note(model: ModelSpec, workload: Workload) -> str:
    """A warning line when requests outgrow the model's context window (vLLM would reject the
    prompt or stop generating there); they are still simulated in full."""
    limit = model.max_position_embeddings
    if limit <= 0:
        return ""
    total = workload.prompt + workload.output
    over = int((total > limit).sum())
    if not over:
        return ""
    return (
        f"Note: {over} of {workload.num_requests} requests need more than {model.name}'s "
        f"{limit}-token context window (up to {int(total.max())} tokens); a real server would "
        "reject or truncate them, the simulation serves them in full"
    )


def _energy_cost_outputs(req: PlanRequest, sr: SearchResult) -> None:
    """$/Mtok for every plan, and the --pareto CSV / --plot PNG (issue 7)."""
    from apex_fast.metrics.energy import apply_cost

    if req.gpu_hour_cost < 0:
        raise ApexError(f"--gpu-hour-cost must be >= 0 $/GPU-hour, got {req.gpu_hour_cost}")
    for e in sr.ranked:
        if e.metrics is not None:
            apply_cost(e.metrics, req.gpu_hour_cost)
    if req.pareto_csv is not None or req.plot_png is not None:
        from apex_fast.pareto import plot_pareto, write_pareto_csv

        if req.pareto_csv is not None:
            write_pareto_csv(sr.ranked, req.pareto_csv, req.gpu_hour_cost)
        if req.plot_png is not None:
            c = sr.cluster
            title = (
                f"{sr.model.name} on {c.num_nodes}x{c.gpus_per_node} {c.device.name}, "
                f"{sr.workload.name}: {len(sr.ranked)} feasible plans (* = best by {sr.objective})"
            )
            plot_pareto(sr.ranked, req.plot_png, title, sr.best.result.plan.label)

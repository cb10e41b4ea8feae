"""`apex.py plan`: enumerate parallel plans, simulate each, report the best.

Options shared with other commands come from apex_fast/cli/options.py; the ones only `plan`
has are declared below. Defaults are those of `PlanRequest` (apex_fast/request.py) and the
engine settings left unset take the chosen engine's own defaults (apex_fast/engines/).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from apex_fast.cli import options as o
from apex_fast.cli.checks import (
    check_input_dir,
    check_output_path,
    check_plot_available,
    check_trace_file,
    compile_note,
    is_file,
    percentiles,
)
from apex_fast.engines import DEFAULT_ENGINE
from apex_fast.engines.options import LaunchSettings
from apex_fast.errors import ApexError
from apex_fast.request import PlanRequest as R

# ------------------------------------------------------------------ options of `plan` only
NumExperts = Annotated[int | None, typer.Option(min=1, help="MoE: override the number of experts.")]
Topk = Annotated[
    int | None,
    typer.Option(min=1, help="MoE: experts per token (top-k; default: the model's own)."),
]
CapacityFactor = Annotated[
    float, typer.Option(min=0, callback=o.finite, help="MoE: expert capacity factor (> 0).")
]
AllPlans = Annotated[bool, typer.Option("--all", help="Print every feasible plan, best first.")]
RequestPercentiles = Annotated[
    list[str] | None,
    typer.Option(help="Extra request-latency percentiles (50 and 95 always shown), e.g. 90 99."),
]
TokenPercentiles = Annotated[
    list[str] | None,
    typer.Option(help="Extra time-between-tokens percentiles (50 and 95 always shown)."),
]
MaxBatchSize = Annotated[
    int,
    typer.Option(
        "--max-batch-size",
        "--max-batch",
        min=0,
        help="Same as --max-num-seqs (the APEX+ name; 0 = engine default).",
    ),
]
BlockSize = Annotated[
    int | None,
    typer.Option(min=1, help="KV cache block size in tokens (default: the engine's)."),
]
GpuMemoryUtilization = Annotated[
    float | None,
    typer.Option(
        min=0,
        max=1,
        callback=o.finite,
        help="Fraction of GPU memory the engine may use, in (0, 1] (default: the engine's).",
    ),
]
EnforceEager = Annotated[
    bool,
    typer.Option("--enforce-eager", "--disable-cuda-graph", help="Run without CUDA graphs."),
]
DisableCustomAllReduce = Annotated[
    bool,
    typer.Option(
        "--disable-custom-all-reduce",
        help="Use NCCL instead of the engine's own NVLink all-reduce kernel.",
    ),
]
DisableFrontendMultiprocessing = Annotated[
    bool,
    typer.Option(
        "--disable-frontend-multiprocessing",
        help="HTTP server in the engine's process (vLLM): its per-token work delays every step.",
    ),
]
MaxModelLen = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Longest request (prompt + output) the engine accepts (default: the model's).",
    ),
]
NumSchedulerSteps = Annotated[
    int | None,
    typer.Option(
        min=1, help="vLLM 0.6 multi-step scheduling: decode steps per scheduler call (default 1)."
    ),
]
EnablePrefixCaching = Annotated[
    bool | None,
    typer.Option(
        "--enable-prefix-caching/--no-enable-prefix-caching",
        help="Automatic prefix caching (default: the engine's): prompt blocks whose hashes "
        "(trace hash_ids) are cached are reused; LRU eviction.",
    ),
]
RouterOpt = Annotated[
    o.Router,
    typer.Option(
        case_sensitive=False,
        help="Data-parallel routing: round-robin, or prefix (the replica holding the longest "
        "cached prefix of the request, ties to the least loaded).",
    ),
]
GpuHourCost = Annotated[
    float,
    typer.Option(
        min=0,
        callback=o.finite,
        help="$ per GPU-hour; reports $ per million generated tokens (0 = off).",
    ),
]
Pareto = Annotated[
    Path | None,
    typer.Option(
        help="Write the Pareto-optimal plans (TTFT, TPOT, throughput, energy, cost) as CSV."
    ),
]
Plot = Annotated[
    Path | None,
    typer.Option(help="Draw the plans and their Pareto front to a PNG (needs matplotlib)."),
]
ProfileDir = Annotated[
    Path | None,
    typer.Option(
        help="Root of measured op tables (comp/<GPU>/gemm_0.csv, comm/<GPU>/*.csv; APEX+ "
        "format); default profile_data/. Ops without a table use the analytic model.",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Processes evaluating plans (default: all cores once a search is long enough; "
        "1 = this process only). Results are identical whatever the number.",
    ),
]
Ray = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Evaluate plans on a Ray cluster: an address, `auto` (the running cluster) or "
        "`local` (needs the extra: pip install -e '.[ray]').",
    ),
]
ModeOpt = Annotated[
    o.Mode,
    typer.Option(
        case_sensitive=False,
        help="Deployment: agg (every replica prefills and decodes), disagg (separate prefill "
        "and decode pools, docs/disaggregation.md) or both (compare the best of each).",
    ),
]
SpeculativeMethodOpt = Annotated[
    o.SpeculativeMethod | None,
    typer.Option(case_sensitive=False, help="Speculative decoding (docs/speculative.md)."),
]
NumSpeculativeTokens = Annotated[
    int,
    typer.Option(min=1, max=o.MAX_SPECULATIVE_TOKENS, help="Draft tokens proposed per step (K)."),
]
AcceptanceRate = Annotated[
    str,
    typer.Option(help="Acceptance rate of a draft token, or one per position (e.g. 0.8,0.6,0.4)."),
]
DraftModel = Annotated[str | None, typer.Option(help="Draft model for --speculative-method draft.")]
KvTransferLatency = Annotated[
    float | None,
    typer.Option(
        min=0,
        callback=o.finite,
        help="Disaggregated: fixed latency per KV transfer in ms (default: docs).",
    ),
]
RequestRate = Annotated[
    float | None,
    typer.Option(
        min=0,
        callback=o.not_nan,
        help="Requests/s, Poisson (gamma with --burstiness) arrivals as vllm bench serve; "
        "inf = all at t=0. With --trace-file: replaces its times. Default: the trace's times, "
        "else all at t=0.",
    ),
]
MaxConcurrency = Annotated[
    int,
    typer.Option(
        min=0,
        help="Closed loop: at most N requests in flight; the next is sent when one finishes "
        "(vllm bench serve --max-concurrency). 0 = no limit.",
    ),
]
RequestsOut = Annotated[
    Path | None,
    typer.Option(help="Write the best plan's per-request timelines to this Parquet file."),
]
PlotCdf = Annotated[
    Path | None,
    typer.Option(help="Draw TTFT/TPOT/latency CDFs of the best plan to a PNG (needs matplotlib)."),
]
_L = LaunchSettings  # engine settings: their defaults (None = the engine's own)


def plan(
    ctx: typer.Context,
    model: o.Model,
    num_gpus_per_node: o.GpusPerNode,
    num_experts: NumExperts = R.num_experts,
    topk: Topk = R.topk,
    capacity_factor: CapacityFactor = R.capacity_factor,
    num_nodes: o.NumNodes = R.num_nodes,
    gpu: o.Gpu = R.gpu,
    frequency: o.Frequency = R.frequency,
    inter_node_bandwidth: o.InterNodeBandwidth = R.inter_node_gbps,
    trace_file: o.TraceFile = R.trace_file,
    prompt_len: o.PromptLen = R.prompt_len,
    output_len: o.OutputLen = R.output_len,
    num_requests: o.NumRequests = R.num_requests,
    kv_dtype: o.KvDtype = o.Dtype[R.kv_dtype],
    weight_dtype: o.WeightDtypeOpt = None,
    activation_dtype: o.ActivationDtype = None,
    all_plans: AllPlans = False,
    request_percentiles: RequestPercentiles = None,
    token_percentiles: TokenPercentiles = None,
    ttft_slo: o.TtftSlo = None,
    tpot_slo: o.TpotSlo = None,
    max_batch_size: MaxBatchSize = 0,
    tp: o.Tp = R.tp,
    pp: o.Pp = R.pp,
    dp: o.Dp = R.dp,
    ep: o.Ep = R.ep,
    max_num_seqs: o.MaxNumSeqs = _L.max_num_seqs,
    max_num_batched_tokens: o.MaxNumBatchedTokens = _L.max_num_batched_tokens,
    chunked_prefill: o.ChunkedPrefill = _L.chunked_prefill,
    block_size: BlockSize = _L.block_size,
    gpu_memory_utilization: GpuMemoryUtilization = _L.gpu_memory_utilization,
    engine: o.EngineName = o.Engine[DEFAULT_ENGINE],
    enforce_eager: EnforceEager = False,
    disable_custom_all_reduce: DisableCustomAllReduce = _L.disable_custom_all_reduce,
    disable_frontend_multiprocessing: DisableFrontendMultiprocessing = False,
    max_model_len: MaxModelLen = _L.max_model_len,
    num_scheduler_steps: NumSchedulerSteps = _L.num_scheduler_steps,
    enable_prefix_caching: EnablePrefixCaching = _L.prefix_caching,
    router: RouterOpt = o.Router[R.router],
    objective: o.ObjectiveOpt = o.Objective[R.objective],
    gpu_hour_cost: GpuHourCost = R.gpu_hour_cost,
    pareto: Pareto = None,
    plot: Plot = None,
    profile_dir: ProfileDir = None,
    json_path: o.JsonPath = None,
    workers: Workers = R.workers,
    ray: Ray = None,
    mode: ModeOpt = o.Mode[R.mode],
    speculative_method: SpeculativeMethodOpt = None,
    num_speculative_tokens: NumSpeculativeTokens = 3,
    acceptance_rate: AcceptanceRate = "0.7",
    draft_model: DraftModel = None,
    kv_transfer_latency: KvTransferLatency = R.kv_transfer_latency_ms,
    quiet: o.Quiet = False,
    debug: o.Debug = False,
    request_rate: RequestRate = R.request_rate,
    burstiness: o.Burstiness = R.burstiness,
    max_concurrency: MaxConcurrency = R.max_concurrency,
    length_dist: o.LengthDistOpt = None,
    random_range_ratio: o.RandomRangeRatio = R.random_range_ratio,
    seed: o.Seed = R.seed,
    requests_out: RequestsOut = None,
    plot_cdf: PlotCdf = None,
) -> None:
    """Enumerate parallel plans, simulate continuous batching for each, report the best."""
    p = ctx.params
    check_plan_inputs(ctx)
    req = plan_request(p)
    if not quiet:
        compile_note()
    from apex_fast.planner import run_plan

    show_progress = not quiet and sys.stderr.isatty()
    text, sr = run_plan(req, show_all=all_plans, progress=show_progress, max_batch=max_batch_size)
    typer.echo(text)
    if json_path is not None:
        from apex_fast.report.jsonout import write_json

        try:
            write_json(sr, json_path)
        except OSError as e:
            raise ApexError(f"--json: cannot write {json_path}: {e.strerror or e}") from None
        if not quiet:
            typer.echo(f"JSON report written to {json_path}", err=True)


# options that describe the workload when there is no trace file
_WORKLOAD_FLAGS = (
    ("--prompt-len", "prompt_len"),
    ("--output-len", "output_len"),
    ("--num-requests", "num_requests"),
    ("--length-dist", "length_dist"),
    ("--random-range-ratio", "random_range_ratio"),
)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user typed option `name` (a parameter name) on the command line."""
    src = ctx.get_parameter_source(name)
    return src is not None and src.name == "COMMANDLINE"


def check_plan_inputs(ctx: typer.Context) -> None:
    """Everything that can be checked before a search that may take a while."""
    p = ctx.params
    if p["max_num_seqs"] is not None and p["max_batch_size"]:
        if p["max_num_seqs"] != p["max_batch_size"]:
            raise ApexError("--max-num-seqs and --max-batch-size disagree; give one")
    for key, flag in (("json_path", "--json"), ("pareto", "--pareto"), ("plot", "--plot")):
        if p[key] is not None:
            check_output_path(p[key], flag)
    if p["plot"] is not None:
        check_plot_available("--plot")
    if p["profile_dir"] is not None:
        check_input_dir(p["profile_dir"], "--profile-dir")
    trace = p["trace_file"]
    check_trace_file(trace)
    if trace is not None and is_file(trace):
        given = [f for f, n in _WORKLOAD_FLAGS if _given(ctx, n)]
        if given:
            raise ApexError(
                f"--trace-file gives every request's lengths and arrival time; "
                f"{', '.join(given)} would be ignored: give one or the other"
            )
    if p["requests_out"] is not None:
        check_output_path(p["requests_out"], "--requests-out")
    if p["plot_cdf"] is not None:
        from apex_fast.metrics.requests import check_plot_available as check_cdf_plot

        check_output_path(p["plot_cdf"], "--plot-cdf")
        check_cdf_plot()
    _check_sizes(p)


def _check_sizes(p: dict[str, Any]) -> None:
    """Cluster size, and the memory the requests would need (before anything is allocated)."""
    from apex_fast.limits import check_cluster_size, check_request_memory, static_request_bytes

    check_cluster_size(p["num_nodes"], p["num_gpus_per_node"])
    if p["trace_file"] is not None:
        return
    from apex_fast.trace_io import MAX_TOKENS

    for flag, key in (("--prompt-len", "prompt_len"), ("--output-len", "output_len")):
        if p[key] > MAX_TOKENS:
            raise ApexError(
                f"{flag} {p[key]:,} is above {MAX_TOKENS:,} tokens, the bound on one request "
                "(as for trace files)"
            )
    from apex_fast.sim.engine_params import DEFAULT_CHUNKED_BUDGET

    prompt, chunked = p["prompt_len"], p["chunked_prefill"]
    chunk = (p["max_num_batched_tokens"] or DEFAULT_CHUNKED_BUDGET) if chunked else max(prompt, 1)
    flag = "--num-requests"
    if chunked and prompt > chunk:
        flag = f"--prompt-len {prompt:,} (prefilled {chunk} tokens a step) with {flag}"
    check_request_memory(p["num_requests"], flag, static_request_bytes(prompt, chunk))


def launch_settings(p: dict[str, Any]) -> LaunchSettings:
    """The engine settings given on the command line (None = the engine's default)."""
    seqs = p["max_num_seqs"] if p["max_num_seqs"] is not None else (p["max_batch_size"] or None)
    return LaunchSettings(
        engine=o.value(p["engine"]),
        enforce_eager=p["enforce_eager"] or None,
        disable_custom_all_reduce=p["disable_custom_all_reduce"],
        disable_frontend_multiprocessing=p["disable_frontend_multiprocessing"],
        max_model_len=p["max_model_len"],
        num_scheduler_steps=p["num_scheduler_steps"],
        prefix_caching=p["enable_prefix_caching"],
        chunked_prefill=p["chunked_prefill"],
        max_num_seqs=seqs,
        max_num_batched_tokens=p["max_num_batched_tokens"],
        block_size=p["block_size"],
        gpu_memory_utilization=p["gpu_memory_utilization"],
    )


def plan_request(p: dict[str, Any]) -> R:
    """The PlanRequest of a `plan` command line (its parameters by name)."""
    slo = {k: math.inf if p[k] is None else p[k] for k in ("ttft_slo", "tpot_slo")}
    return R(
        model=p["model"],
        gpus_per_node=p["num_gpus_per_node"],
        num_nodes=p["num_nodes"],
        gpu=p["gpu"],
        inter_node_gbps=p["inter_node_bandwidth"],
        num_experts=p["num_experts"],
        topk=p["topk"],
        capacity_factor=p["capacity_factor"],
        frequency=p["frequency"],
        **_workload_fields(p),
        kv_dtype=o.value(p["kv_dtype"]),
        weight_dtype=o.value(p["weight_dtype"]),
        activation_dtype=o.value(p["activation_dtype"]),
        request_percentiles=percentiles(p["request_percentiles"], "--request-percentiles"),
        token_percentiles=percentiles(p["token_percentiles"], "--token-percentiles"),
        ttft_slo_ms=slo["ttft_slo"],  # inf = no SLO set
        tpot_slo_ms=slo["tpot_slo"],
        tp=p["tp"],
        pp=p["pp"],
        dp=p["dp"],
        ep=p["ep"],
        launch=launch_settings(p),
        router=o.value(p["router"]),
        objective=o.value(p["objective"]),
        profile_dir=p["profile_dir"],
        gpu_hour_cost=p["gpu_hour_cost"],
        pareto_csv=p["pareto"],
        plot_png=p["plot"],
        workers=p["workers"],
        ray_address=p["ray"],
        mode=o.value(p["mode"]),
        speculative=_speculative(p),
        kv_transfer_latency_ms=p["kv_transfer_latency"],
        requests_out=p["requests_out"],
        plot_cdf=p["plot_cdf"],
    )


def _workload_fields(p: dict[str, Any]) -> dict[str, Any]:
    """The workload part of a PlanRequest (same names on the command line)."""
    names = ("trace_file", "prompt_len", "output_len", "num_requests", "request_rate")
    names += ("burstiness", "max_concurrency", "random_range_ratio", "seed")
    return {**{k: p[k] for k in names}, "length_dist": o.value(p["length_dist"])}


def _speculative(p: dict[str, Any]):  # noqa: ANN202 - SpeculativeConfig | None, imported late
    """The speculative-decoding settings of `plan` (None without --speculative-method)."""
    method, draft = o.value(p["speculative_method"]), p["draft_model"]
    if method is None:
        if draft is not None:
            raise ApexError("--draft-model needs --speculative-method draft")
        return None
    from apex_fast.sim.speculative import SpeculativeConfig, parse_acceptance

    accept = parse_acceptance(p["acceptance_rate"])
    spec = SpeculativeConfig(method, p["num_speculative_tokens"], accept, draft)
    spec.validate()
    if draft is not None:  # fail before the search on an unknown draft model
        from apex_fast.models import load_model

        load_model(draft)
    return spec

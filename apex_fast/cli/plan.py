"""`apex.py plan`: enumerate parallel plans, simulate each, report the best.

Options shared with other commands come from apex_fast/cli/options.py; the ones only `plan`
has are declared below. Defaults are those of `PlanRequest` (apex_fast/request.py) and the
engine settings left unset take the chosen engine's own defaults (apex_fast/engines/).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from apex_fast.cli import options as o
from apex_fast.cli.checks import compile_note
from apex_fast.cli.plan_request import check_plan_inputs, plan_request
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
CapacityFactor = Annotated[float, o.real("MoE: expert capacity factor (> 0).", min=0)]
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
    o.real(
        "Fraction of GPU memory the engine may use, in (0, 1] (default: the engine's).",
        min=0,
        max=1,
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
    float, o.real("$ per GPU-hour; reports $ per million generated tokens (0 = off).", min=0)
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
    o.real("Disaggregated: fixed latency per KV transfer in ms (default: docs).", min=0),
]
RequestRate = Annotated[
    float | None,
    o.real(
        "Requests/s, Poisson (gamma with --burstiness) arrivals as vllm bench serve; "
        "inf = all at t=0. With --trace-file: replaces its times. Default: the trace's times, "
        "else all at t=0.",
        min=0,
        inf=True,
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
    p = dict(locals())  # the parameters, converted (Enums, Paths) whatever the Typer version
    check_plan_inputs(ctx, p)
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

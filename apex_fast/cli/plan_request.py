"""A `plan` command line as a PlanRequest: the checks that run before the search (paths,
sizes, conflicting options) and the mapping from option names to request fields."""

from __future__ import annotations

import math
from typing import Any

import typer

from apex_fast.cli import options as o
from apex_fast.cli.checks import (
    check_input_dir,
    check_output_path,
    check_trace_file,
    is_file,
    percentiles,
)
from apex_fast.engines.options import LaunchSettings
from apex_fast.errors import ApexError
from apex_fast.plotting import check_plot_available
from apex_fast.request import PlanRequest

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


def check_plan_inputs(ctx: typer.Context, p: dict[str, Any]) -> None:
    """Everything that can be checked before a search that may take a while (`p`: the
    command's parameters by name)."""
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
        check_output_path(p["plot_cdf"], "--plot-cdf")
        check_plot_available("--plot-cdf")
    _check_sizes(p)


def _check_sizes(p: dict[str, Any]) -> None:
    """Cluster size, and the memory the requests would need (before anything is allocated)."""
    from apex_fast.limits import check_cluster_size, check_request_memory, static_request_bytes

    check_cluster_size(p["num_nodes"], p["num_gpus_per_node"])
    if p["trace_file"] is not None:
        return
    from apex_fast.workload import MAX_TOKENS

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


def plan_request(p: dict[str, Any]) -> PlanRequest:
    """The PlanRequest of a `plan` command line (its parameters by name)."""
    slo = {k: math.inf if p[k] is None else p[k] for k in ("ttft_slo", "tpot_slo")}
    return PlanRequest(
        **shared_fields(p),
        num_experts=p["num_experts"],
        topk=p["topk"],
        capacity_factor=p["capacity_factor"],
        kv_dtype=o.value(p["kv_dtype"]),
        weight_dtype=o.value(p["weight_dtype"]),
        activation_dtype=o.value(p["activation_dtype"]),
        request_percentiles=percentiles(p["request_percentiles"], "--request-percentiles"),
        token_percentiles=percentiles(p["token_percentiles"], "--token-percentiles"),
        ttft_slo_ms=slo["ttft_slo"],  # inf = no SLO set
        tpot_slo_ms=slo["tpot_slo"],
        ep=p["ep"],
        launch=launch_settings(p),
        router=o.value(p["router"]),
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


def shared_fields(p: dict[str, Any]) -> dict[str, Any]:
    """The PlanRequest fields of the options `plan` and `capacity` share: model, cluster,
    pins, ranking and workload (the options a command does not have keep their defaults)."""
    same = ("model", "num_nodes", "gpu", "frequency", "tp", "pp", "dp", "trace_file")
    same += ("prompt_len", "output_len", "num_requests", "request_rate", "burstiness")
    same += ("max_concurrency", "random_range_ratio", "seed")
    return {
        **{k: p[k] for k in same if k in p},
        "gpus_per_node": p["num_gpus_per_node"],
        "inter_node_gbps": p["inter_node_bandwidth"],
        "length_dist": o.value(p["length_dist"]),
        "objective": o.value(p["objective"]),
    }


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

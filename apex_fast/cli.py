"""Command line: `python apex.py plan | models | gpus`.

The CLI only parses and validates options, calls the planner and prints; it knows nothing of
kernels. Errors in the input end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import typer

from apex_fast.errors import ApexError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="apex-fast: plan how to serve an LLM on a GPU cluster (parallelism, batching, "
    "latency, throughput, energy, SLOs).",
    pretty_exceptions_enable=False,
)

_DEBUG = {"on": False}


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _engine_names() -> tuple[str, ...]:
    from apex_fast.engines import ENGINE_NAMES

    return ENGINE_NAMES


def _check_output_path(path: Path, flag: str) -> None:
    """Fail before the search, not after it, when an output file cannot be written."""
    if path.is_dir():
        raise ApexError(f"{flag} {path} is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ApexError(f"{flag} {path}: folder {parent} does not exist")


def _percentiles(values: list[str] | None, flag: str) -> tuple[float, ...]:
    out: list[float] = []
    for v in values or []:
        for part in str(v).replace(",", " ").split():
            try:
                p = float(part)
            except ValueError:
                raise ApexError(f"{flag}: {part!r} is not a number") from None
            if not (0.0 <= p <= 100.0):
                raise ApexError(f"{flag}: percentile {part} is outside [0, 100]")
            out.append(p)
    return tuple(out)


def _check_workload_outputs(requests_out: Path | None, plot_cdf: Path | None) -> None:
    """--requests-out / --plot-cdf: writable paths, and matplotlib present, before the search."""
    if requests_out is not None:
        _check_output_path(requests_out, "--requests-out")
    if plot_cdf is not None:
        from apex_fast.metrics.requests import check_plot_available

        _check_output_path(plot_cdf, "--plot-cdf")
        check_plot_available()


@app.command()
def plan(
    model: str = typer.Option(
        ...,
        "--model",
        help="Bundled model name (see `apex.py models`), HF id, or path to a config.json.",
    ),
    num_experts: int | None = typer.Option(None, help="MoE: override the number of experts."),
    topk: int | None = typer.Option(
        None, help="MoE: experts per token (top-k; default: the model's own)."
    ),
    capacity_factor: float = typer.Option(1.0, help="MoE: expert capacity factor."),
    num_nodes: int = typer.Option(1, help="Number of nodes."),
    num_gpus_per_node: int = typer.Option(
        ..., "--num-gpus-per-node", "--num-gpus", help="GPUs per node (alias --num-gpus)."
    ),
    gpu: str = typer.Option("H100-SXM-80GB", help="GPU type (see `apex.py gpus`)."),
    frequency: int = typer.Option(0, help="SM clock in MHz (0 = default boost clock)."),
    inter_node_bandwidth: float | None = typer.Option(
        None,
        help="Inter-node network bandwidth in GB/s per GPU per direction (e.g. 50 for one "
        "400 Gb/s NIC per GPU); default: the reference system in `apex.py gpus`.",
    ),
    trace_file: Path | None = typer.Option(
        None, help="Request trace (.jsonl with StartTimeOffset ns, ContextTokens, GeneratedTokens)."
    ),
    prompt_len: int = typer.Option(2048, help="Prompt tokens per request (no trace file)."),
    output_len: int = typer.Option(128, help="Output tokens per request (no trace file)."),
    num_requests: int = typer.Option(1024, help="Requests, all arriving at t=0 (no trace file)."),
    kv_dtype: str = typer.Option("half", help="KV cache dtype: float, half, float8."),
    weight_dtype: str = typer.Option(
        "half", help="Weight dtype: float, half, float8 (int8, int4, mxfp4)."
    ),
    activation_dtype: str = typer.Option("half", help="Activation dtype: float, half, float8."),
    all_plans: bool = typer.Option(False, "--all", help="Print every feasible plan, best first."),
    request_percentiles: list[str] = typer.Option(
        None, help="Extra request-latency percentiles (50 and 95 always shown), e.g. 90 99."
    ),
    token_percentiles: list[str] = typer.Option(
        None, help="Extra time-between-tokens percentiles (50 and 95 always shown)."
    ),
    ttft_slo: float = typer.Option(10.0, help="TTFT SLO in ms."),
    tpot_slo: float = typer.Option(10.0, help="TPOT SLO in ms."),
    max_batch_size: int = typer.Option(
        0,
        "--max-batch-size",
        "--max-batch",
        help="Seed name of --max-num-seqs (0 = engine default).",
    ),
    tp: int | None = typer.Option(None, help="Pin tensor parallelism."),
    pp: int | None = typer.Option(None, help="Pin pipeline stages."),
    dp: int | None = typer.Option(None, help="Pin data-parallel replicas."),
    ep: int | None = typer.Option(None, help="Pin expert parallelism (MoE)."),
    max_num_seqs: int | None = typer.Option(
        None, help="Max running sequences per engine (vLLM; 256)."
    ),
    max_num_batched_tokens: int | None = typer.Option(
        None,
        help="Token budget per step (default 2048 with chunked prefill, else the longest request).",
    ),
    chunked_prefill: bool | None = typer.Option(
        None,
        "--chunked-prefill/--no-chunked-prefill",
        help="Chunked prefill (default: the engine's; vllm-0.6: on).",
    ),
    block_size: int | None = typer.Option(
        None, help="KV cache block size in tokens (default: the engine's; vLLM 16)."
    ),
    gpu_memory_utilization: float | None = typer.Option(
        None, help="Fraction of GPU memory the engine may use (default: the engine's; vLLM 0.9)."
    ),
    engine: str = typer.Option(
        "vllm-0.6",
        "--engine",
        help="Serving engine: " + ", ".join(_engine_names()) + " (docs/engines.md).",
    ),
    enforce_eager: bool = typer.Option(
        False, "--enforce-eager", "--disable-cuda-graph", help="Run without CUDA graphs."
    ),
    disable_custom_all_reduce: bool = typer.Option(
        False,
        "--disable-custom-all-reduce",
        help="Use NCCL instead of the engine's own NVLink all-reduce kernel.",
    ),
    max_model_len: int | None = typer.Option(
        None, help="Longest request (prompt + output) the engine accepts (default: the model's)."
    ),
    num_scheduler_steps: int | None = typer.Option(
        None, help="vLLM 0.6 multi-step scheduling: decode steps per scheduler call (default 1)."
    ),
    enable_prefix_caching: bool | None = typer.Option(
        None,
        "--enable-prefix-caching/--no-enable-prefix-caching",
        help="Prefix caching (default: the engine's); recorded only, the cache is not simulated.",
    ),
    objective: str = typer.Option(
        "latency", help="Rank plans by: latency, throughput, energy, cost ($ per token)."
    ),
    gpu_hour_cost: float = typer.Option(
        0.0, help="$ per GPU-hour; reports $ per million generated tokens (0 = off)."
    ),
    pareto: Path | None = typer.Option(
        None, help="Write the Pareto-optimal plans (TTFT, TPOT, throughput, energy, cost) as CSV."
    ),
    plot: Path | None = typer.Option(
        None, help="Draw the plans and their Pareto front to a PNG (needs matplotlib)."
    ),
    profile_dir: Path | None = typer.Option(
        None,
        help="Root of measured op tables (comp/<GPU>/gemm_0.csv, comm/<GPU>/*.csv; APEX+ "
        "format); default profile_data/. Ops without a table use the analytic model.",
    ),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the JSON report here."),
    workers: int | None = typer.Option(
        None,
        min=1,
        help="Processes evaluating plans (default: all cores once a search is long enough; "
        "1 = this process only). Results are identical whatever the number.",
    ),
    ray: str | None = typer.Option(
        None,
        "--ray",
        metavar="ADDRESS",
        help="Evaluate plans on a Ray cluster: an address, `auto` (the running cluster) or "
        "`local` (needs the extra: pip install -e '.[ray]').",
    ),
    quiet: bool = typer.Option(False, help="No progress output."),
    debug: bool = typer.Option(False, help="Show tracebacks of internal errors."),
    request_rate: float | None = typer.Option(
        None,
        help="Requests/s, Poisson (gamma with --burstiness) arrivals as vllm bench serve; "
        "inf = all at t=0. With --trace-file: replaces its times. Default: the trace's times, "
        "else all at t=0.",
    ),
    burstiness: float = typer.Option(
        1.0, help="Gamma shape of the arrival gaps with --request-rate: 1 = Poisson, < 1 burstier."
    ),
    max_concurrency: int = typer.Option(
        0,
        help="Closed loop: at most N requests in flight; the next is sent when one finishes "
        "(vllm bench serve --max-concurrency). 0 = no limit.",
    ),
    length_dist: str | None = typer.Option(
        None,
        help="Synthetic lengths around --prompt-len/--output-len: fixed, uniform (with "
        "--random-range-ratio), lognormal; or lmsys, creation, summarization (fitted).",
    ),
    random_range_ratio: float = typer.Option(
        0.0,
        help="Lengths uniform in [L(1-r), L(1+r)] as vLLM's random dataset; r in [0, 1).",
    ),
    seed: int = typer.Option(0, help="Random seed of synthetic arrivals and lengths."),
    requests_out: Path | None = typer.Option(
        None, help="Write the best plan's per-request timelines to this Parquet file."
    ),
    plot_cdf: Path | None = typer.Option(
        None, help="Draw TTFT/TPOT/latency CDFs of the best plan to a PNG (needs matplotlib)."
    ),
) -> None:
    """Enumerate parallel plans, simulate continuous batching for each, report the best."""
    _DEBUG["on"] = debug
    from apex_fast.planner import PlanRequest, run_plan

    if max_batch_size < 0:
        raise ApexError(f"--max-batch-size must be >= 0, got {max_batch_size}")
    if max_num_seqs is not None and max_batch_size and max_num_seqs != max_batch_size:
        raise ApexError("--max-num-seqs and --max-batch-size disagree; give one")
    seqs = max_num_seqs if max_num_seqs is not None else (max_batch_size or None)
    if gpu_hour_cost < 0:
        raise ApexError(f"--gpu-hour-cost must be >= 0 $/GPU-hour, got {gpu_hour_cost}")
    for name, v in (("--ttft-slo", ttft_slo), ("--tpot-slo", tpot_slo)):
        if not v >= 0:  # also NaN
            raise ApexError(f"{name} must be >= 0 ms, got {v}")
    if json_path is not None:
        _check_output_path(json_path, "--json")
    _check_workload_outputs(requests_out, plot_cdf)
    req = PlanRequest(
        model=model,
        num_experts=num_experts,
        topk=topk,
        capacity_factor=capacity_factor,
        num_nodes=num_nodes,
        gpus_per_node=num_gpus_per_node,
        gpu=gpu,
        inter_node_gbps=inter_node_bandwidth,
        frequency=frequency,
        trace_file=trace_file,
        prompt_len=prompt_len,
        output_len=output_len,
        num_requests=num_requests,
        kv_dtype=kv_dtype,
        weight_dtype=weight_dtype,
        activation_dtype=activation_dtype,
        request_percentiles=_percentiles(request_percentiles, "--request-percentiles"),
        token_percentiles=_percentiles(token_percentiles, "--token-percentiles"),
        ttft_slo_ms=ttft_slo,
        tpot_slo_ms=tpot_slo,
        tp=tp,
        pp=pp,
        dp=dp,
        ep=ep,
        max_num_seqs=seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        chunked_prefill=chunked_prefill,
        block_size=block_size,
        gpu_memory_utilization=gpu_memory_utilization,
        engine=engine,
        enforce_eager=enforce_eager or None,
        disable_custom_all_reduce=disable_custom_all_reduce,
        max_model_len=max_model_len,
        num_scheduler_steps=num_scheduler_steps,
        prefix_caching=enable_prefix_caching,
        objective=objective,
        profile_dir=profile_dir,
        gpu_hour_cost=gpu_hour_cost,
        pareto_csv=pareto,
        plot_png=plot,
        workers=workers,
        ray_address=ray,
        request_rate=request_rate,
        burstiness=burstiness,
        max_concurrency=max_concurrency,
        length_dist=length_dist,
        random_range_ratio=random_range_ratio,
        seed=seed,
        requests_out=requests_out,
        plot_cdf=plot_cdf,
    )
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


@app.command()
def models(
    json_out: bool = typer.Option(False, "--json", help="Print JSON records for tools."),
) -> None:
    """List the bundled models with their parameter counts."""
    from apex_fast.listing import models_text

    typer.echo(models_text(json_out))


@app.command()
def gpus(
    json_out: bool = typer.Option(False, "--json", help="Print JSON records for tools."),
) -> None:
    """List the known devices with their datasheet numbers."""
    from apex_fast.listing import gpus_text

    typer.echo(gpus_text(json_out))


# Commands that live in their own modules (each module defines `command`). They are imported
# only when asked for (or for the command list of `--help`), so `models` or `plan` do not pay
# for the imports of `validate` or `profile`.
_COMMAND_MODULES = {
    "validate": "apex_fast.validation.command",
    "trace": "apex_fast.tracegen",
    "capacity": "apex_fast.capacity",
    "profile": "apex_fast.profiler",
}
_REGISTERED: set[str] = set()


def _register_command_modules(only: str | None = None) -> None:
    """Register the module commands: just `only` when it names one, else all of them."""
    import importlib

    names = [only] if only in _COMMAND_MODULES else list(_COMMAND_MODULES)
    for name in names:
        if name in _REGISTERED:
            continue
        modname = _COMMAND_MODULES[name]
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue  # command not built yet
            raise
        app.command(name)(mod.command)
        _REGISTERED.add(name)


def _command_name(args: list[str]) -> str | None:
    """The command a command line runs (its first word), None for `--help` and the like."""
    return args[0] if args and not args[0].startswith("-") else None


_BUILTIN_COMMANDS = ("plan", "models", "gpus")
_NARGS = ("--request-percentiles", "--token-percentiles")


def _expand_nargs(argv: list[str]) -> list[str]:
    """Accept the seed's `--request-percentiles 90 99` (argparse nargs='+') as well as Typer's
    repeated flags, by joining the values into one comma-separated argument."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _NARGS:
            vals = []
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                vals.append(argv[i])
                i += 1
            out += [a, ",".join(vals)]
            continue
        out.append(a)
        i += 1
    return out


def _is_usage_error(e: BaseException) -> bool:
    """Click's exceptions (Typer >= 0.2x vendors Click; older Typer uses the click package)."""
    if not hasattr(e, "format_message"):
        return False
    if isinstance(e, typer.TyperException):
        return True
    try:
        import click
    except ImportError:
        return False
    return isinstance(e, click.exceptions.ClickException)


def main(argv: list[str] | None = None) -> int:
    args = _expand_nargs(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    name = _command_name(args)
    try:
        if name not in _BUILTIN_COMMANDS:
            _register_command_modules(name)
        app(args=args, standalone_mode=False)
    except ApexError as e:
        typer.echo(f"error: {e}", err=True)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except Exception as e:  # noqa: BLE001
        if _is_usage_error(e):
            # bad flag, bad value type, missing option: one line, exit 2 (no usage block)
            msg = " ".join(str(e.format_message()).split())
            typer.echo(f"error: {msg}", err=True)
            return 2
        if debug:
            traceback.print_exc()
        else:
            typer.echo(
                f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)",
                err=True,
            )
        return 1
    return 0

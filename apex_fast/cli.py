"""Command line: `python apex.py plan | models | gpus`.

The CLI only parses and validates options, calls the planner and prints; it knows nothing of
kernels. Errors in the input end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import math
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
    # plain Click help: option names are never cut at 80 columns, and text in square brackets
    # (`[ray]`) is printed as written instead of being read as Rich markup
    rich_markup_mode=None,
)

_DEBUG = {"on": False}


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _engine_names() -> tuple[str, ...]:
    from apex_fast.engines import ENGINE_NAMES

    return ENGINE_NAMES


def _short_path(path: Path | str) -> str:
    text = str(path)
    return text if len(text) <= 120 else text[:60] + "..." + text[-40:]


def check_output_path(path: Path, flag: str) -> None:
    """Fail before the search, not after it, when an output file cannot be written (folder
    missing or not writable, name too long, a directory in its place)."""
    import errno
    import os

    shown = _short_path(path)
    try:
        if path.is_dir():
            raise ApexError(f"{flag} {shown} is a directory; give a file name")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise ApexError(f"{flag} {shown}: folder {_short_path(parent)} does not exist")
        name_max = os.pathconf(parent, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
        if len(os.fsencode(path.name)) > name_max:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
        if not os.access(parent, os.W_OK):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        if path.exists() and not os.access(path, os.W_OK):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as e:
        raise ApexError(f"{flag} {shown}: cannot write there: {e.strerror or e}") from None


def check_input_file(path: Path, flag: str) -> None:
    """A file name the operating system refuses (too long, a file in place of a folder on the
    way, no permission) is said with the flag; a missing file is left to its loader."""
    try:
        path.stat()
    except FileNotFoundError:
        return
    except OSError as e:
        raise ApexError(f"{flag} {_short_path(path)}: {e.strerror or e}") from None


def check_input_dir(path: Path, flag: str) -> None:
    """A folder the user named must exist and be a folder."""
    shown = _short_path(path)
    try:
        if path.is_file():
            raise ApexError(f"{flag} {shown} is a file; give the folder that holds the tables")
        if not path.is_dir():
            raise ApexError(f"{flag} {shown} does not exist")
    except OSError as e:
        raise ApexError(f"{flag} {shown}: {e.strerror or e}") from None


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
        check_output_path(requests_out, "--requests-out")
    if plot_cdf is not None:
        from apex_fast.metrics.requests import check_plot_available

        check_output_path(plot_cdf, "--plot-cdf")
        check_plot_available()


# Longest SLO accepted, in ms (one hour): a larger value is a typing mistake, and the capacity
# search would have to simulate traffic over many times that span to see overload.
MAX_SLO_MS = 3_600_000.0


def check_slo(value: float | None, flag: str, allow_zero: bool = True) -> None:
    """An SLO in ms: a number in [0, MAX_SLO_MS] ((0, MAX_SLO_MS] for capacity)."""
    if value is None:
        return
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= MAX_SLO_MS):  # also NaN
        low = ">= 0" if allow_zero else "> 0"
        raise ApexError(
            f"{flag} must be {low} and at most {MAX_SLO_MS:.0f} ms (one hour), got {value:g}"
        )


def kernel_cache_present() -> bool:
    """Whether Numba has a compiled copy of the batching kernel on disk (cache=True writes it
    to __pycache__ beside the source, or under NUMBA_CACHE_DIR)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("apex_fast.kernels.batching")
    if spec is None or spec.origin is None:
        return True
    src = Path(spec.origin)
    folders = [src.parent / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        folders.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    for folder in folders:
        try:
            if any(folder.rglob(f"{src.stem}.*.nbi")):
                return True
        except OSError:
            continue
    return not os.access(src.parent, os.W_OK)  # cache elsewhere: we cannot tell


def compile_note() -> None:
    """Say once, on the first run, why it takes a few seconds before anything happens."""
    if not kernel_cache_present():
        typer.echo(
            "note: first run: compiling the simulation kernel (about 5 s; later runs reuse it)",
            err=True,
        )


def _given(ctx: typer.Context | None, name: str) -> bool:
    """Whether the user typed option `name` (a parameter name) on the command line."""
    if ctx is None:
        return False
    src = ctx.get_parameter_source(name)
    return src is not None and src.name == "COMMANDLINE"


def _check_plan_inputs(
    json_path: Path | None,
    pareto: Path | None,
    plot: Path | None,
    profile_dir: Path | None,
    trace_file: Path | None,
    ctx: typer.Context | None = None,
) -> None:
    """Everything that can be checked before a search that may take a while."""
    for path, flag in ((json_path, "--json"), (pareto, "--pareto"), (plot, "--plot")):
        if path is not None:
            check_output_path(path, flag)
    if plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise ApexError(
                "--plot needs matplotlib: pip install 'apex-fast[plot]' (or pip install matplotlib)"
            )
    if profile_dir is not None:
        check_input_dir(profile_dir, "--profile-dir")
    if trace_file is not None:
        check_input_file(trace_file, "--trace-file")
    if trace_file is not None and is_file(trace_file):  # a missing trace is said first
        check_no_bom(trace_file, "--trace-file")
        given = [f for f, n in _WORKLOAD_FLAGS if _given(ctx, n)]
        if given:
            raise ApexError(
                f"--trace-file gives every request's lengths and arrival time; "
                f"{', '.join(given)} would be ignored: give one or the other"
            )


def check_no_bom(path: Path, flag: str) -> None:
    """A UTF-8 byte order mark (some Windows editors add one) is named as such, instead of the
    first line being reported as not valid JSON or a CSV header as lacking its columns."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return  # the trace loader reports unreadable files
    if head.startswith(b"\xef\xbb\xbf") or head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ApexError(
            f"{flag} {_short_path(path)} starts with a byte order mark (BOM); save it as UTF-8 "
            "without a BOM"
        )


def is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


# options that describe the workload when there is no trace file
_WORKLOAD_FLAGS = (
    ("--prompt-len", "prompt_len"),
    ("--output-len", "output_len"),
    ("--num-requests", "num_requests"),
    ("--length-dist", "length_dist"),
    ("--random-range-ratio", "random_range_ratio"),
)


@app.command()
def plan(
    ctx: typer.Context,
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
    weight_dtype: str | None = typer.Option(
        None,
        help="Weight dtype: float, half, float8 (int8, int4, mxfp4); default: the checkpoint's "
        "own (FP8 for DeepSeek-V3/R1), else half.",
    ),
    activation_dtype: str | None = typer.Option(
        None, help="Activation dtype: float, half, float8; default: as the weights' default."
    ),
    all_plans: bool = typer.Option(False, "--all", help="Print every feasible plan, best first."),
    request_percentiles: list[str] = typer.Option(
        None, help="Extra request-latency percentiles (50 and 95 always shown), e.g. 90 99."
    ),
    token_percentiles: list[str] = typer.Option(
        None, help="Extra time-between-tokens percentiles (50 and 95 always shown)."
    ),
    ttft_slo: float | None = typer.Option(
        None,
        help="TTFT SLO in ms; the report shows the share of requests that meet it (default: none).",
    ),
    tpot_slo: float | None = typer.Option(
        None,
        help="TPOT SLO in ms; the report shows the share of requests that meet it (default: none).",
    ),
    max_batch_size: int = typer.Option(
        0,
        "--max-batch-size",
        "--max-batch",
        help="Same as --max-num-seqs (the APEX+ name; 0 = engine default).",
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
    disable_frontend_multiprocessing: bool = typer.Option(
        False,
        "--disable-frontend-multiprocessing",
        help="HTTP server in the engine's process (vLLM): its per-token work delays every step.",
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
        help="Automatic prefix caching (default: the engine's): prompt blocks whose hashes "
        "(trace hash_ids) are cached are reused; LRU eviction.",
    ),
    router: str = typer.Option(
        "round-robin",
        help="Data-parallel routing: round-robin, or prefix (the replica holding the longest "
        "cached prefix of the request, ties to the least loaded).",
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
    mode: str = typer.Option(
        "agg",
        help="Deployment: agg (every replica prefills and decodes), disagg (separate prefill "
        "and decode pools, docs/disaggregation.md) or both (compare the best of each).",
    ),
    speculative_method: str | None = typer.Option(
        None, help="Speculative decoding: draft, eagle, ngram or mtp (docs/speculative.md)."
    ),
    num_speculative_tokens: int = typer.Option(3, help="Draft tokens proposed per step (K)."),
    acceptance_rate: str = typer.Option(
        "0.7",
        help="Acceptance rate of a draft token, or one per position (e.g. 0.8,0.6,0.4).",
    ),
    draft_model: str | None = typer.Option(
        None, help="Draft model for --speculative-method draft."
    ),
    kv_transfer_latency: float | None = typer.Option(
        None, help="Disaggregated: fixed latency per KV transfer in ms (default: docs)."
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
    if not (0 <= gpu_hour_cost < math.inf):  # also NaN
        raise ApexError(f"--gpu-hour-cost must be >= 0 $/GPU-hour, got {gpu_hour_cost}")
    for name, v in (("--ttft-slo", ttft_slo), ("--tpot-slo", tpot_slo)):
        check_slo(v, name)
    _check_plan_inputs(json_path, pareto, plot, profile_dir, trace_file, ctx)
    _check_workload_outputs(requests_out, plot_cdf)
    from apex_fast.limits import check_cluster_size, check_request_memory, static_request_bytes

    check_cluster_size(num_nodes, num_gpus_per_node)
    if trace_file is None:
        from apex_fast.workload import MAX_TOKENS

        for flag, v in (("--prompt-len", prompt_len), ("--output-len", output_len)):
            if v > MAX_TOKENS:
                raise ApexError(
                    f"{flag} {v:,} is above {MAX_TOKENS:,} tokens, the bound on one request "
                    "(as for trace files)"
                )
    if trace_file is None and num_requests > 0:
        chunk = (max_num_batched_tokens or 2048) if chunked_prefill else max(prompt_len, 1)
        per_request = static_request_bytes(prompt_len, chunk)
        flag = "--num-requests"
        if chunked_prefill and prompt_len > chunk:
            flag = f"--prompt-len {prompt_len:,} (prefilled {chunk} tokens a step) with {flag}"
        check_request_memory(num_requests, flag, per_request)
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
        ttft_slo_ms=math.inf if ttft_slo is None else ttft_slo,  # inf = no SLO set
        tpot_slo_ms=math.inf if tpot_slo is None else tpot_slo,
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
        disable_frontend_multiprocessing=disable_frontend_multiprocessing,
        max_model_len=max_model_len,
        num_scheduler_steps=num_scheduler_steps,
        prefix_caching=enable_prefix_caching,
        router=router,
        objective=objective,
        profile_dir=profile_dir,
        gpu_hour_cost=gpu_hour_cost,
        pareto_csv=pareto,
        plot_png=plot,
        workers=workers,
        ray_address=ray,
        mode=mode,
        speculative=_speculative(
            speculative_method, num_speculative_tokens, acceptance_rate, draft_model
        ),
        kv_transfer_latency_ms=kv_transfer_latency,
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
    if not quiet:
        compile_note()
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


def _speculative(method: str | None, k: int, acceptance: str, draft: str | None):
    """The speculative-decoding settings of `plan` (None without --speculative-method)."""
    from apex_fast.sim.speculative import SpeculativeConfig, parse_acceptance

    if method is None:
        if draft is not None:
            raise ApexError("--draft-model needs --speculative-method draft")
        return None
    spec = SpeculativeConfig(method, k, parse_acceptance(acceptance), draft)
    spec.validate()
    if draft is not None:  # fail before the search on an unknown draft model
        from apex_fast.models import load_model

        load_model(draft)
    return spec


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
        cmd = mod.command
        if name == "trace":
            cmd = _checked_trace_command(cmd)
        app.command(name)(cmd)
        _REGISTERED.add(name)


# StartTimeOffset is an int64 of nanoseconds: a trace may span at most this many seconds
TRACE_MAX_SPAN_S = (2**63 - 1) / 1e9


def check_trace_args(
    rate: float, num_requests: int, seed: int, out: Path, burstiness: float = 1.0
) -> None:
    """The `trace` options, checked before anything is generated or written."""
    import math

    from apex_fast.limits import (
        BYTES_PER_GENERATED_REQUEST,
        BYTES_PER_TRACE_LINE,
        check_disk_space,
        check_request_memory,
    )

    if not rate > 0:  # also NaN; inf = every request at t = 0
        raise ApexError(f"--rate must be a positive number of requests/s (or inf), got {rate}")
    if not (burstiness > 0 and math.isfinite(burstiness)):
        raise ApexError(f"--burstiness must be > 0 (1 = Poisson), got {burstiness}")
    if num_requests < 1:
        raise ApexError(f"--num-requests must be at least 1, got {num_requests}")
    if seed < 0:
        raise ApexError(f"--seed must be a non-negative integer, got {seed}")
    span = (num_requests - 1) / rate if math.isfinite(rate) else 0.0
    # gamma gaps: the span exceeds its mean by many standard deviations only with a tiny
    # probability; 2x the mean plus 10 gaps leaves room for bursty (burstiness < 1) traces
    if 2.0 * span + 10.0 / rate > TRACE_MAX_SPAN_S:
        raise ApexError(
            f"--rate {rate:g} with {num_requests} requests spans about {span:.3g} s, beyond the "
            f"{TRACE_MAX_SPAN_S:.3g} s (292 years) that nanosecond StartTimeOffset values can "
            "hold; raise --rate"
        )
    check_output_path(out, "--out")
    check_request_memory(num_requests, "--num-requests", BYTES_PER_GENERATED_REQUEST)
    parent = str(out.parent) if str(out.parent) else "."
    check_disk_space(float(num_requests) * BYTES_PER_TRACE_LINE, parent, "--out")


def _checked_trace_command(cmd):  # noqa: ANN001, ANN202 - wraps a Typer command as is
    import functools

    @functools.wraps(cmd)
    def checked(**kwargs):  # noqa: ANN003, ANN202
        check_trace_args(
            kwargs["rate"],
            kwargs["num_requests"],
            kwargs["seed"],
            kwargs["out"],
            kwargs.get("burstiness", 1.0),
        )
        return cmd(**kwargs)

    return checked


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


def _os_error_line(e: OSError) -> str:
    """One line for a file the user named that cannot be read or written (name too long,
    permission denied, no space left, ...)."""
    what = f" {e.filename}" if e.filename is not None else ""
    name = str(what)
    if len(name) > 120:  # an over-long file name is the error; do not print all of it
        name = name[:60] + "..." + name[-40:]
    return f"cannot access{name}: {e.strerror or e}"


def main(argv: list[str] | None = None) -> int:
    args = _expand_nargs(list(sys.argv[1:] if argv is None else argv))
    if not args:
        args = ["--help"]  # no arguments at all: the help is the answer (exit 0)
    debug = "--debug" in args
    name = _command_name(args)
    try:
        if name not in _BUILTIN_COMMANDS:
            _register_command_modules(name)
        rv = app(args=args, standalone_mode=False)
        if rv == 130:  # Typer turns Ctrl-C inside a command into this exit code
            raise KeyboardInterrupt
    except ApexError as e:
        typer.echo(f"error: {' '.join(str(e).split()) or 'invalid input'}", err=True)
        return 2
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        # Ctrl-C (Click turns it into Abort): not a success, nothing half-written
        typer.echo("interrupted", err=True)
        return 130
    except MemoryError:
        typer.echo(
            "error: out of memory: the input is too large for this machine "
            "(see docs/limits.md for the bounds the tool enforces)",
            err=True,
        )
        return 2
    except OSError as e:
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {_os_error_line(e)}", err=True)
        return 2
    except Exception as e:  # noqa: BLE001
        if _is_usage_error(e):
            # bad flag, bad value type, missing option: one line, exit 2 (no usage block)
            msg = " ".join(str(e.format_message()).split())
            typer.echo(f"error: {msg or 'incomplete command; see --help'}", err=True)
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

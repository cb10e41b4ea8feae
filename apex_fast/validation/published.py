"""Replay published serving measurements (apex_fast/data/published_measurements.csv).

Each row becomes a workload of `num_prompts` requests: Poisson arrivals at the row's request rate
(fixed seed), all at t = 0 for an infinite rate, behind a closed loop of `max_concurrency` clients
where the row has one (8 requests per client when the source gives no prompt count). The
request lengths follow the row's `lengths` column (see `_lengths`): fixed lengths; vLLM's sonnet
prompts (the printed mean prompt length, max_tokens outputs); SGLang's
seeded uniform draw, reproduced and checked against the totals the client printed; or, for
dataset-driven lengths whose totals the client printed, every request at the mean lengths (an
approximation, summarised on its own line). The plan is the row's TP/EP on its GPU and dtypes,
the engine its profile with defaults. Rows the tool cannot reproduce are counted and skipped
with the reason. Nothing here is fitted: the errors are out-of-sample for every engine (vLLM
0.6's host parameters come from other runs; the other engines' are derived, see
docs/engines.md).

A closed-loop row without a prompt count is a steady-state figure: the number of requests is
ours (8 per client), so the replay measures where that choice does not matter: TTFT and TPOT
over the requests after the first wave of `max_concurrency` and before the last, and output
throughput by Little's law (clients x output tokens / mean request latency, the client's wait
for a free slot included). The published NIM sweep is such a figure: its TTFT at concurrency
100-250 is what a steady closed loop with ~86 running requests gives ((C - 86) / 1.84 req/s),
not what a cold start of C prompts gives.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from apex_fast.data import published_measurements
from apex_fast.dtypes import canonical_dtype
from apex_fast.engines.launch_line import read_launch_line
from apex_fast.engines.options import LaunchSettings, engine_option_fields
from apex_fast.engines.sglang import SGLANG_05_FIRST, mem_fraction_static_05
from apex_fast.engines.trtllm import triton_backend_defaults
from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import DeviceSpec, get_device
from apex_fast.metrics.summary import compute_metrics
from apex_fast.models import load_model, model_aliases
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.plans.plan import Plan
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.workload import Workload

SEED = 0
# measured column -> (predicted metric attribute, scale from seconds to the column's unit)
COMPARED = {
    "ttft_mean_ms": ("ttft_mean_s", 1e3),
    "ttft_median_ms": ("ttft_p50_s", 1e3),
    "tpot_mean_ms": ("tpot_mean_s", 1e3),
    "itl_mean_ms": ("itl_mean_s", 1e3),
    "output_tok_s": ("throughput_tokens_per_s", 1.0),
    # offline throughput runs print requests/s (and total tokens/s) but not output tokens/s
    "request_s": ("throughput_requests_per_s", 1.0),
}


def row_dtype(value: str | None) -> str:
    """Our dtype name of a published row's dtype column ('bf16', 'fp8'; empty: not stated,
    taken as half)."""
    return canonical_dtype(value) if value else "half"


# Checkpoints whose config.json equals a bundled model's except for the context length: Meta's
# Llama 3 8B has Llama 3.1 8B's layers, widths, heads and vocabulary with 8192 positions and no
# rope scaling (meta-llama/Meta-Llama-3-8B-Instruct config.json; the bundled Llama 3 70B and
# 3.1 70B configs differ in exactly these two fields). id (lower case) -> (bundled id, positions)
_SHORTER_CONTEXT = {
    "meta-llama/meta-llama-3-8b-instruct": ("meta-llama/Llama-3.1-8B-Instruct", 8192),
}


def _context_positions(hf_id: str) -> int | None:
    """The row's own context length when its checkpoint is a bundled model with a shorter
    context (None otherwise)."""
    hit = _SHORTER_CONTEXT.get(hf_id.lower())
    return hit[1] if hit else None


def row_model(hf_id: str) -> ModelSpec:
    """The bundled model a row's checkpoint is replayed as, with the checkpoint's own context
    length (`_base_model_id`, `_context_positions`)."""
    model = load_model(_base_model_id(hf_id))
    positions = _context_positions(hf_id)
    if positions:
        model = dataclasses.replace(model, max_position_embeddings=positions)
    return model


def _base_model_id(hf_id: str) -> str:
    """A quantised checkpoint's architecture is its base model's (NVIDIA's '-FP8' Llama
    checkpoints are meta-llama's models with FP8 weights, Qwen's and Meta's '-FP8' checkpoints
    their own models; the row's dtype says so). A checkpoint bundled with its own config (it
    keeps some layers unquantised, e.g. meta-llama/Llama-3.1-405B-FP8) is replayed as itself;
    one that differs from a bundled model only in its context length as that model
    (`_SHORTER_CONTEXT`, its context set by `_context_positions`)."""
    if hf_id.lower() in model_aliases():
        return hf_id
    if hf_id.lower() in _SHORTER_CONTEXT:
        return _SHORTER_CONTEXT[hf_id.lower()][0]
    if hf_id.startswith("nvidia/") and hf_id.endswith("-FP8"):
        return "meta-llama/" + hf_id[len("nvidia/") : -len("-FP8")]
    if hf_id.startswith(("Qwen/", "meta-llama/")) and hf_id.endswith("-FP8"):
        return hf_id[: -len("-FP8")]
    return hf_id


# label appended to the model class of rows replayed with mean dataset lengths
APPROX_LENGTHS = "dataset lengths approximated"


def _sglang_random_lengths(row: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-request lengths of SGLang's `bench_serving --dataset-name random`: the client seeds
    numpy's global generator with `--seed` and draws the input lengths, then the output lengths,
    uniformly from [max(int(L * ratio), 1), L] (python/sglang/bench_serving.py,
    sample_random_requests, v0.5)."""
    ratio = float(row["random_range_ratio"] or 0.0)
    rs = np.random.RandomState(int(row["client_seed"]))
    lens = []
    for col in ("input_len", "output_len"):
        top = int(row[col])
        lens.append(rs.randint(max(int(top * ratio), 1), top + 1, size=n).astype(np.int64))
    return lens[0], lens[1]


# Sources whose runs were made one after another against one server launch, in the order of
# their rows in the CSV (the page's order): the SGLang cookbook's Llama 3.1 page gives one
# deployment command for its six bench_serving runs (section 5.1), and its printed P99 TTFTs
# bound the runs' first waves far below a cold start (1000/1000 at concurrency 100: P99 1.25 s,
# where 100 uncached prompts of 49398 tokens take over 3.5 s to prefill at the page's own
# single-request prefill speed), as an earlier run's prompts still in the radix cache give.
ONE_SERVER_SOURCES = frozenset(
    {
        "https://github.com/sgl-project/sgl-cookbook/blob/1e3601bc19dbca27b9791e741e13505acb21cdfe"
        "/docs/autoregressive/Llama/Llama3.1.md",
    }
)


# what two runs of one source (ONE_SERVER_SOURCES) share when they ran on one server launch
# with SGLang's bench_serving random dataset and one client seed
SAME_SERVER_KEYS = (
    "source_url",
    "model_hf_id",
    "gpu",
    "tp",
    "engine_flags",
    "client_seed",
    "lengths",
)


def _earlier_runs(row: dict) -> list[dict]:
    """The runs made on the row's server before it (ONE_SERVER_SOURCES; oldest first)."""
    if row["source_url"] not in ONE_SERVER_SOURCES:
        return []
    rows = published_measurements(row["engine_profile"])
    mine = next((k for k, r in enumerate(rows) if r == row), None)
    if mine is None:
        return []
    return [r for r in rows[:mine] if all(r[k] == row[k] for k in SAME_SERVER_KEYS)]


def sglang_bench_cached(
    row: dict, prompt: np.ndarray, output: np.ndarray, capacity: int
) -> np.ndarray:
    """Prompt tokens of each request of an SGLang `bench_serving --dataset-name random` run that
    the server's radix cache already holds when the run starts (python/sglang/bench_serving.py
    at v0.5.6, `benchmark` and `sample_random_requests`):

    - the warm-up request (`--warmup-requests`, default 1) sends request 0's prompt (at most 32
      output tokens) just before the run, so request 0 finds its whole prompt cached;
    - the client flushes the cache only with `--flush-cache` (or in SGLang's CI), and request i
      of every run with the same `--seed` is the same ShareGPT conversation cut (or repeated) to
      that run's i-th drawn length, so on one server (ONE_SERVER_SOURCES) request i shares its
      first min(L_i, L'_i) tokens with request i of every earlier run (up to the token at the cut,
      which the prompt's text round trip may tokenise differently);
    - the radix cache evicts least recently used tokens only when its pool is full: an earlier
      run's tokens are counted while the later runs' prompt and output tokens and this run's
      requests before i (all taken as distinct, an upper bound) fit next to them in `capacity`.

    SGLang computes at least the last prompt token (schedule_batch.py `init_next_round_input`:
    max_prefix_len = input_len - 1)."""
    n = prompt.size
    cached = np.zeros(n, np.int64)
    cached[0] = prompt[0]
    # tokens this run adds before request i (prompts and outputs of requests 0 .. i-1)
    own_before = np.concatenate([[0], np.cumsum(prompt + output)[:-1]])
    runs = _earlier_runs(row)
    # tokens of the runs after run k (k = 0 .. len(runs) - 1), before this one
    sizes = [int(r["total_input_tokens"]) + int(r["total_output_tokens"]) for r in runs]
    for k, run in enumerate(runs):
        n_run = int(run["num_prompts"])
        p_run, _ = _sglang_random_lengths(run, n_run)
        m = min(n, n_run)
        share = np.minimum(prompt[:m], p_run[:m])
        kept = sum(sizes[k + 1 :]) + own_before[:m] + share <= capacity
        cached[:m] = np.maximum(cached[:m], np.where(kept, share, 0))
    return np.minimum(cached, prompt - 1)


def _lengths(row: dict, n: int) -> tuple[np.ndarray, np.ndarray, bool] | str:
    """Prompt and output tokens of the row's n requests, and whether they approximate the
    source's (dataset rows); or why the row's lengths cannot be rebuilt.

    `lengths` column: `fixed` (or empty with input_len given) - every request input_len /
    output_len; `sonnet` - vLLM's sonnet prompts (`_sonnet_lengths`); `sglang-random` -
    SGLang's seeded uniform draw, used only when its sums equal the totals the client printed (then the requests are the measured ones, up to order);
    `dataset` (or empty without input_len) - lengths from a dataset: with the printed totals,
    every request gets the mean prompt and output length, which keeps the token totals but not
    the spread of the dataset (an approximation)."""
    kind = (row.get("lengths") or "").strip()
    if not kind:
        kind = "fixed" if row["input_len"] is not None else "dataset"
    totals = row.get("total_input_tokens"), row.get("total_output_tokens")
    if kind == "fixed":
        if row["input_len"] is None or row["output_len"] is None:
            return "fixed lengths not given"
        p = np.full(n, int(row["input_len"]), np.int64)
        o = np.full(n, int(row["output_len"]), np.int64)
        return p, o, False
    if kind == "sglang-random":
        if None in (row["input_len"], row["output_len"], row.get("client_seed"), *totals):
            return "random lengths without seed or printed totals"
        p, o = _sglang_random_lengths(row, n)
        if (int(p.sum()), int(o.sum())) != (int(totals[0]), int(totals[1])):
            return "random draw does not reproduce the printed token totals"
        return p, o, False
    if kind == "sonnet":
        return _sonnet_lengths(row, n)
    if kind == "dataset":
        if None in totals or not row["num_prompts"]:
            return "lengths come from a dataset"
        n_src = int(row["num_prompts"])
        mean_in = max(round(totals[0] / n_src), 1)
        mean_out = max(round(totals[1] / n_src), 1)
        return np.full(n, mean_in, np.int64), np.full(n, mean_out, np.int64), True
    return f"unknown lengths kind {kind!r}"


def _sonnet_lengths(row: dict, n: int) -> tuple[np.ndarray, np.ndarray, bool] | str:
    """Lengths of vLLM's `benchmark_serving.py --dataset-name sonnet` (0.5.x .. 0.6.x,
    `sample_sonnet_requests`): every prompt is the same instruction, the same prefix lines and a
    seeded random choice of whole poem lines, as many as fit `--sonnet-input-len` on average,
    in the chat template; `--sonnet-output-len` is each request's max_tokens. So prompts differ
    from one another by a few lines' worth of tokens and fall a few percent short of the stated
    length. With the printed totals every request gets the mean prompt length and, when the
    output total is not num_prompts x output_len, the mean output length; without them the
    stated lengths."""
    if row["input_len"] is None or row["output_len"] is None:
        return "sonnet lengths not given"
    p_len, o_len = int(row["input_len"]), int(row["output_len"])
    n_src = int(row["num_prompts"] or 0)
    t_in, t_out = row.get("total_input_tokens"), row.get("total_output_tokens")
    if n_src and t_in is not None:
        p_len = max(round(t_in / n_src), 1)
    if n_src and t_out is not None and int(t_out) != n_src * o_len:
        o_len = max(round(t_out / n_src), 1)
    return np.full(n, p_len, np.int64), np.full(n, o_len, np.int64), False


def _workload(row: dict) -> tuple[Workload, bool] | str:
    """The row's workload and whether its lengths are approximated (or why it is skipped)."""
    conc = int(row["max_concurrency"] or 0)
    n = int(row["num_prompts"] or 0)
    if conc and not n:
        n = 8 * conc  # a closed-loop sweep without a prompt count: 8 requests per client
    if n < 1:
        return "number of prompts not given"
    lens = _lengths(row, n)
    if isinstance(lens, str):
        return lens
    prompt, output, approx = lens
    rate = row["request_rate"].strip().lower() if row["request_rate"] else "inf"
    if rate in ("inf", ""):
        arrival = np.zeros(n)
    else:
        rng = np.random.default_rng(SEED)
        gaps = rng.exponential(1.0 / float(rate), n)
        arrival = np.cumsum(gaps) - gaps[0]
    mean = f"{prompt.mean():.0f}/{output.mean():.0f}"
    shape = f"mean {mean}" if approx or prompt.min() != prompt.max() else mean
    return (
        Workload(
            arrival=arrival,
            prompt=prompt,
            output=output,
            name=f"{shape} at {rate}",
            max_concurrency=conc,
        ),
        approx,
    )


def _effective_flags(row: dict) -> str:
    """The row's launch line plus what its client sets on the engine: vLLM's offline
    `benchmark_throughput.py` (0.5.x .. 0.6.x) passes enable_chunked_prefill=False to the
    engine unless given --enable-chunked-prefill (argparse store_true; benchmarks/
    benchmark_throughput.py of vllm 0.6.3.post1, lines 110 and 473), so vLLM's own long-context
    default (chunking above 32k) never applies there."""
    flags = row["engine_flags"] or ""
    offline_v0 = row["engine_profile"] in ("vllm-0.5", "vllm-0.6") and "benchmark_throughput" in (
        row["source_detail"] or ""
    )
    if offline_v0 and "--enable-chunked-prefill" not in flags and not _engine_args_bench(row):
        flags += " --no-enable-chunked-prefill"
    return flags


def _engine_args_bench(row: dict) -> bool:
    """The row's benchmark_throughput.py takes the engine's own arguments (vllm PR 9529, "Make
    benchmarks use EngineArgs", opened 2024-10-19, two days after 0.6.3.post1): its
    enable_chunked_prefill defaults to None and vLLM's long-context default applies. Taken for
    the 0.6.3.post2 nightlies and 0.6.4 on; inferred for the Llama-3.1-405B-FP8 rows from the
    memory model: an unchunked 91680-token profiling step leaves no KV room after its 56.8 GiB
    of weights (docs/memory.md), and vLLM refuses to start with fewer KV tokens than
    max_model_len, yet the runs completed."""
    version = (row.get("engine_version") or "").split("+")[0]
    return version.startswith("0.6.3.post2") or _version(version) >= (0, 6, 4)


def _nvidia_quantised(row: dict) -> bool:
    """The row ran a checkpoint NVIDIA quantised: one of its ModelOpt checkpoints
    (`nvidia/...`), or a NIM container, whose optimised TensorRT-LLM engines NVIDIA builds.
    The NIM case is an assumption the NIM sweep itself supports: its saturated concurrency
    (920 tokens/s x 93 ms per token = ~86 running requests of 5000 + 500 tokens on 2x H100
    with FP8 weights) does not fit a BF16 KV cache (room for ~45 in this tool's memory model,
    ~55 with every byte left after the weights), and fits an FP8 one (~90)."""
    return row["model_hf_id"].startswith("nvidia/") or "NIM" in (row["engine_version"] or "")


# label of vLLM V0 rows measured on source builds older than the profile's release series
PRE_RELEASE = "source builds before the release"


def _pre_release_build(row: dict) -> bool:
    """A vLLM V0 row measured on a development build older than its profile's release (e.g.
    an August 2024 main build replayed with the vllm-0.6 profile, whose host time was fitted on
    0.6.0): shown on its own line, since its host overhead is not the release's."""
    if row["engine_profile"] not in ("vllm-0.5", "vllm-0.6"):
        return False
    series = row["engine_profile"].removeprefix("vllm-")
    return not (row["engine_version"] or "").startswith(series)


def row_plan(
    row: dict, model: ModelSpec, device: DeviceSpec
) -> tuple[Cluster, Plan, EngineOptions] | str:
    """The plan a published row ran (one replica at its TP and EP, its dtypes) and the engine's
    options for it; a string says why there is none."""
    tp = int(row["tp"] or 1)
    ep = int(row["ep"]) if row["ep"] else None
    wdt = row_dtype(row["weight_dtype"])
    kvdt = row_dtype(row["kv_dtype"])
    if not row["kv_dtype"] and wdt == "float8" and _nvidia_quantised(row):
        # unstated KV dtype of NVIDIA's ModelOpt FP8 checkpoints: they quantise the KV cache
        # too (kv_cache_quant_algo FP8 in their hf_quant_config.json) - an assumption
        kvdt = "float8"
    cluster = Cluster(device, 1, tp)
    # the row's own launch line, in the engine's spelling; what it does not set takes the
    # engine's defaults (for vLLM V0 its real ones, not this tool's planning default)
    line = read_launch_line(
        row["engine_profile"], _effective_flags(row), model.max_position_embeddings or None
    )
    # SGLang's --enable-dp-attention: attention copies at TP tp/copies, each with its own KV
    # cache, while the MoE layers span all tp devices
    copies = line.attention_copies
    if copies == 1:
        plans, _ = enumerate_plans(
            model, cluster, Pins(dp=1, pp=1, tp=tp, ep=ep), weight=wdt, act=wdt, kv=kvdt
        )
        plans = [p for p in plans if p.attn_replicas == 1 and p.ffn_replicas == 1]
    else:  # data-parallel attention: `copies` attention copies of TP tp/copies, FFN over all
        plans, _ = enumerate_plans(model, cluster, Pins(dp=1, pp=1), weight=wdt, act=wdt, kv=kvdt)
        plans = [
            p
            for p in plans
            if p.attn_replicas == copies
            and p.tp * copies == tp
            and p.ffn_replicas == 1
            and p.ep == (ep or 1)
        ]
    if not plans:
        return "no plan with this TP/EP"
    fields = engine_option_fields(
        _launch_settings(row, device, tp, line.settings),
        device.name,
        device.hbm_gb * 1e9 / 2**30,
        model.max_position_embeddings or None,
        tp,
    )
    opts = EngineOptions(**fields)
    return cluster, plans[0], opts


def _launch_settings(
    row: dict, device: DeviceSpec, tp: int, given: LaunchSettings
) -> LaunchSettings:
    """The row's launch settings (`given`, from its launch line), with SGLang >= 0.5.3's
    mem_fraction_static when the line sets none: that version derives it from the GPU memory
    (engines/sglang.py mem_fraction_static_05; the profile describes 0.4.6.post5's table by
    TP). The GPU's memory in MiB is read as hbm_gb x 1024 (80 GB parts have 80 GiB;
    nvidia-smi shows 81559 MiB on an H100 SXM). TensorRT-LLM rows served by Triton's
    tensorrtllm_backend before 1.0 take that backend's defaults (engines/trtllm.py
    TRITON_BACKEND_014) where the line sets nothing."""
    if row["engine_profile"] == "trtllm":
        return _triton_settings(row, given)
    if row["engine_profile"] != "sglang" or given.gpu_memory_utilization is not None:
        return given
    if _version(row.get("engine_version") or "") >= SGLANG_05_FIRST:
        frac = mem_fraction_static_05(device.hbm_gb * 1024, tp, int(row["pp"] or 1))
        return dataclasses.replace(given, gpu_memory_utilization=frac)
    return given


def _triton_settings(row: dict, given: LaunchSettings) -> LaunchSettings:
    """The launch settings of a TensorRT-LLM row, with the Triton backend's own defaults for
    KV block reuse, chunked context and the KV memory fraction when the row ran the TensorRT
    engine behind Triton (its CUDA-graph and host-overlap defaults are not applied: the
    launch cost of a TensorRT engine is not in this tool, docs/engines.md)."""
    triton = triton_backend_defaults(row.get("engine_version") or "", row["engine_flags"] or "")
    if triton is None:
        return given
    return dataclasses.replace(
        given,
        prefix_caching=(
            triton.kv_block_reuse if given.prefix_caching is None else given.prefix_caching
        ),
        chunked_prefill=(
            triton.chunked_context if given.chunked_prefill is None else given.chunked_prefill
        ),
        gpu_memory_utilization=(
            triton.kv_cache_free_gpu_mem_fraction
            if given.gpu_memory_utilization is None
            else given.gpu_memory_utilization
        ),
    )


def _version(text: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string such as 0.5.3.post3 ((0,) if none)."""
    parts = []
    for p in text.split(" ")[0].split(".")[:3]:
        if not p.isdigit():
            break
        parts.append(int(p))
    return tuple(parts) or (0,)


def replay_row(row: dict) -> dict:
    """Prediction and errors for one published row (or the reason it is skipped)."""
    out = {
        "engine": row["engine_profile"],
        "model": row["model_hf_id"],
        "gpu": row["gpu"],
        "tp": row["tp"],
        "source": row["source_url"],
    }
    built = _workload(row)
    if isinstance(built, str):
        return {**out, "skipped": built}
    wl, approx = built
    try:
        model = row_model(row["model_hf_id"])
        device = get_device(row["gpu"])
    except ApexError:
        return {**out, "skipped": "model or GPU not bundled"}
    out["class"] = "MoE" if model.is_moe else "dense"
    if _pre_release_build(row):
        out["class"] += f", {PRE_RELEASE}"
    if approx:
        out["class"] += f", {APPROX_LENGTHS}"
        out["approximation"] = f"every request at the mean dataset lengths ({wl.name})"
    built_plan = row_plan(row, model, device)
    if isinstance(built_plan, str):
        return {**out, "skipped": built_plan}
    cluster, plan, opts = built_plan
    if (row.get("lengths") or "").strip() == "sglang-random":
        wl = _with_cached_prompts(row, wl, model, cluster, plan, opts)
        out["cached_prompt_tokens"] = int(wl.prefix.sum())
    res = simulate_plan(model, cluster, plan, wl, opts)
    if not res.feasible:
        return {**out, "skipped": f"infeasible: {res.reason}"}
    m = compute_metrics(res, wl, cluster)
    steady = _steady_state(res, wl) if wl.max_concurrency and not row["num_prompts"] else {}
    for col, (attr, scale) in COMPARED.items():
        meas = row[col]
        if meas is None:
            continue
        pred = steady.get(attr, getattr(m, attr)) * scale
        out[f"{col}_meas"] = meas
        out[f"{col}_pred"] = pred
        out[f"{col}_err"] = pred / meas - 1.0
    return out


def _with_cached_prompts(
    row: dict, wl: Workload, model: ModelSpec, cluster: Cluster, plan: Plan, opts: EngineOptions
) -> Workload:
    """The workload of an SGLang bench_serving run with the prompt tokens the radix cache holds
    at its start (`sglang_bench_cached`) as KV each request brings without prefill compute
    (Workload.prefix: held in the KV cache and attended to, not computed)."""
    capacity = opts.memory(model, plan, cluster, opts.budget(wl)).kv_tokens
    cached = sglang_bench_cached(row, wl.prompt, wl.output, capacity)
    return dataclasses.replace(wl, prompt=wl.prompt - cached, prefix=cached)


def _steady_state(res, wl: Workload) -> dict[str, float]:  # noqa: ANN001 - a PlanResult
    """Steady-state means of a closed loop: requests after the first wave of `max_concurrency`
    and before the last one (needs at least three waves; otherwise all requests)."""
    conc = wl.max_concurrency
    ids = np.concatenate(res.stream_index)
    order = np.argsort(ids, kind="stable")
    first = np.concatenate([s.first_token for s in res.streams])[order]
    finish = np.concatenate([s.finish for s in res.streams])[order]
    entry = np.concatenate(
        [
            s.arrival if s.arrival is not None else wl.arrival[i]
            for s, i in zip(res.streams, res.stream_index, strict=True)
        ]
    )[order]
    n = len(ids)
    mid = slice(conc, n - conc) if n >= 3 * conc else slice(0, n)
    out = wl.output[np.sort(ids)][mid].astype(np.float64)
    latency = finish[mid] - entry[mid]
    tpot = (finish[mid] - first[mid]) / np.maximum(out - 1.0, 1.0)
    return {
        "ttft_mean_s": float(np.mean(first[mid] - entry[mid])),
        "ttft_p50_s": float(np.median(first[mid] - entry[mid])),
        "tpot_mean_s": float(np.mean(tpot)),
        "itl_mean_s": float(np.mean(tpot)),  # fixed lengths: every gap of a request alike
        "throughput_tokens_per_s": float(conc * np.mean(out) / np.mean(latency)),
    }


def replay(engine: str | None = None) -> list[dict]:
    return [replay_row(r) for r in published_measurements(engine)]


def per_engine_summary(rows: list[dict]) -> dict[str, dict]:
    """Per engine and model class (dense / MoE): rows used and skipped, MAE of TTFT, of
    TPOT/ITL and of output throughput."""
    out: dict[str, dict] = {}
    keys = sorted({(r["engine"], r.get("class", "not replayed")) for r in rows})
    for eng, cls in keys:
        rs = [r for r in rows if r["engine"] == eng and r.get("class", "not replayed") == cls]
        used = [r for r in rs if "skipped" not in r]

        def mae(cols: tuple[str, ...], used: list[dict] = used) -> tuple[float, int]:
            errs = []
            for r in used:
                for c in cols:
                    if f"{c}_err" in r:
                        errs.append(abs(r[f"{c}_err"]))
                        break
            return (float(np.mean(errs)) if errs else math.nan), len(errs)

        ttft, n_ttft = mae(("ttft_mean_ms", "ttft_median_ms"))
        tpot, n_tpot = mae(("itl_mean_ms", "tpot_mean_ms"))
        # requests/s where a source gives no output tokens/s (equal errors for fixed lengths)
        thr, n_thr = mae(("output_tok_s", "request_s"))
        reasons: dict[str, int] = {}
        for r in rs:
            if "skipped" in r:
                key = r["skipped"].split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
        out[f"{eng} ({cls})"] = {
            "rows": len(rs),
            "replayed": len(used),
            "ttft_mae": ttft,
            "ttft_n": n_ttft,
            "tpot_itl_mae": tpot,
            "tpot_itl_n": n_tpot,
            "throughput_mae": thr,
            "throughput_n": n_thr,
            "skipped": reasons,
        }
    return out


def render_published(summ: dict[str, dict]) -> str:
    from apex_fast.report.text import table

    def f(x: float, n: int) -> str:
        return "-" if n == 0 else f"{100 * x:.1f}% ({n})"

    body = [
        [
            eng,
            str(d["rows"]),
            str(d["replayed"]),
            f(d["ttft_mae"], d["ttft_n"]),
            f(d["tpot_itl_mae"], d["tpot_itl_n"]),
            f(d["throughput_mae"], d["throughput_n"]),
            "; ".join(f"{k} {v}" for k, v in d["skipped"].items()) or "-",
        ]
        for eng, d in summ.items()
    ]
    head = ["Engine", "Rows", "Replayed", "TTFT MAE", "ITL/TPOT MAE", "Throughput MAE"]
    return "Published measurements (apex_fast/data), out of sample for every engine:\n" + table(
        [*head, "Skipped"], body
    )

"""Replay engines' own memory-profiling log lines (apex_fast/data/memory_logs.csv) through the
KV-cache memory model (plans/memory.py) and compare the KV capacity the engine logged with
the one predicted for the same model, GPU, tensor-parallel size and launch settings.

Each row names the rule its engine version used to size the KV cache (`peak_rule`):
`free-memory-difference` and `allocated-peak` (vLLM, `gpu_memory_utilization`),
`static-fraction` (SGLang, `mem_fraction_static`) and `free-fraction` (TensorRT-LLM,
`kv_cache_free_gpu_mem_fraction`). docs/memory.md describes the rules and the fitted constants.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

from apex_fast.dtypes import DTYPE_BYTES
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.models import load_model
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.plans.memory import (
    GIB,
    NON_TORCH_BASE_BYTES,
    NON_TORCH_GROUP_BYTES,
    PEAK_ALLOCATED,
    PEAK_FREE_MEMORY,
    RESERVED_PER_ALLOCATED,
    RUNTIME_RESERVE_BYTES,
    SAMPLER_LIVE_COPIES,
    USABLE_FRACTION,
    allocated_peak_activation_bytes,
    forward_peak_bytes,
    kv_bytes_per_token_per_device,
    kv_pool_bytes,
    legacy_activation_bytes,
    non_torch_bytes,
    profiling_terms,
    weight_bytes_per_device,
)
from apex_fast.plans.plan import Plan

DATA_FILE = "memory_logs.csv"
# a logged activation peak above this multiple of the forward pass's allocated peak is the
# sampler's (fit_constants)
SAMPLER_EXCESS = 1.1
# Rows whose sizing lies outside the memory model, left out of every fit (and skipped by the
# agreement tests):
OUTSIDE_MODEL = {
    # vLLM 0.2.4 with TP4: the profiler of that release counted about 13 GiB per device outside
    # PyTorch (the PR's own before/after block counts differ by 10750 blocks); later releases
    # do not show it.
    "vllm-pr2031-llama2-70b-tp4",
    # TensorRT-LLM 0.5 TensorRT engine: runtime buffers sized at build time for 25 sequences x
    # 4096 output tokens, which no launch setting of this tool describes.
    "trtllm-issue224-llama2-7b-a10",
}
# the memory-fraction kind each row rule reads its fraction as (plans.memory.kv_pool_bytes)
RULE_KIND = {
    PEAK_FREE_MEMORY: "gpu_memory_utilization",
    PEAK_ALLOCATED: "gpu_memory_utilization",
    "static-fraction": "mem_fraction_static",
    "free-fraction": "kv_cache_free_gpu_mem_fraction",
}
# dtype spellings of the data file -> this tool's dtype names
DTYPES = {"bf16": "half", "fp16": "half", "fp8": "float8", "int8": "int8"}


@dataclass(frozen=True)
class LogRow:
    """One logged KV-cache sizing: the launch settings and what the engine printed."""

    row_id: str
    source_url: str
    engine: str
    engine_version: str
    peak_rule: str
    model: str
    gpu: str
    total_gpu_gib: float | None  # as the engine printed it (None: not printed)
    tp: int
    weight_dtype: str
    kv_dtype: str
    max_num_batched_tokens: int | None
    max_num_seqs: int | None
    memory_fraction: float
    block_size: int
    logged_weights_gib: float | None
    logged_non_torch_gib: float | None
    logged_activation_gib: float | None
    logged_kv_gib: float | None
    logged_kv_tokens: int | None
    logged_gpu_blocks: int | None

    @property
    def source(self) -> str:
        """The thread or page the row comes from (rows of one source share it)."""
        return self.source_url


def _opt_float(v: str) -> float | None:
    return float(v) if v.strip() else None


def _opt_int(v: str) -> int | None:
    return int(v) if v.strip() else None


def load_rows() -> list[LogRow]:
    """Every row of apex_fast/data/memory_logs.csv."""
    text = resources.files("apex_fast.data").joinpath(DATA_FILE).read_text()
    out = []
    for r in csv.DictReader(text.splitlines()):
        out.append(
            LogRow(
                row_id=r["row_id"],
                source_url=r["source_url"],
                engine=r["engine"],
                engine_version=r["engine_version"],
                peak_rule=r["peak_rule"],
                model=r["model"],
                gpu=r["gpu"],
                total_gpu_gib=_opt_float(r["total_gpu_gib"]),
                tp=int(r["tp"]),
                weight_dtype=DTYPES[r["weight_dtype"]],
                kv_dtype=DTYPES[r["kv_dtype"]],
                max_num_batched_tokens=_opt_int(r["max_num_batched_tokens"]),
                max_num_seqs=_opt_int(r["max_num_seqs"]),
                memory_fraction=float(r["memory_fraction"]),
                block_size=int(r["block_size"]),
                logged_weights_gib=_opt_float(r["logged_weights_gib"]),
                logged_non_torch_gib=_opt_float(r["logged_non_torch_gib"]),
                logged_activation_gib=_opt_float(r["logged_activation_gib"]),
                logged_kv_gib=_opt_float(r["logged_kv_gib"]),
                logged_kv_tokens=_opt_int(r["logged_kv_tokens"]),
                logged_gpu_blocks=_opt_int(r["logged_gpu_blocks"]),
            )
        )
    return out


def row_plan(model: ModelSpec, row: LogRow) -> Plan:
    """The plain tensor-parallel plan of the row: one replica, one stage, heads and FFN split
    over `tp` devices, no expert parallelism, the row's weight and KV dtypes."""
    cluster = Cluster(device=get_device(row.gpu), num_nodes=1, gpus_per_node=row.tp)
    pins = Pins(dp=1, pp=1, tp=row.tp, ep=1)
    plans, _ = enumerate_plans(model, cluster, pins, weight=row.weight_dtype, kv=row.kv_dtype)
    plain = [p for p in plans if p.attn_replicas == 1 and p.ffn_replicas == 1]
    if not plain:
        raise ValueError(f"{row.row_id}: no plain TP{row.tp} plan for {row.model}")
    return plain[0]


@dataclass(frozen=True)
class Replay:
    """Predicted and logged KV capacity of one row, per device, in bytes."""

    row: LogRow
    capacity: float  # device memory the fraction applies to
    weights: float
    activation: float
    runtime: float
    kv_bytes_per_token: float
    predicted_kv: float
    logged_kv: float

    @property
    def error(self) -> float:
        """(predicted - logged) / logged KV bytes."""
        return (self.predicted_kv - self.logged_kv) / self.logged_kv

    @property
    def predicted_tokens(self) -> int:
        return int(self.predicted_kv // self.kv_bytes_per_token)


def logged_kv_bytes(row: LogRow, kv_per_token: float) -> float:
    """The KV bytes per device the row logged: printed GiB, else tokens or blocks x the
    model's KV bytes per token."""
    if row.logged_kv_gib is not None:
        return row.logged_kv_gib * GIB
    if row.logged_kv_tokens is not None:
        return row.logged_kv_tokens * kv_per_token
    if row.logged_gpu_blocks is not None:
        return row.logged_gpu_blocks * row.block_size * kv_per_token
    raise ValueError(f"{row.row_id}: no logged KV capacity")


@dataclass(frozen=True)
class Constants:
    """The fitted constants of vLLM's profiling-step rules (plans/memory.py)."""

    sampler_copies: float = SAMPLER_LIVE_COPIES
    base: float = NON_TORCH_BASE_BYTES  # bytes
    group_extra: float = NON_TORCH_GROUP_BYTES  # bytes
    reserved_ratio: float = RESERVED_PER_ALLOCATED  # free-memory rule: reserved / allocated


def replay(
    row: LogRow, model: ModelSpec | None = None, constants: Constants | None = None
) -> Replay:
    """Predict the row's KV pool with the memory model and pair it with the logged one."""
    model = model or load_model(row.model)
    c = constants or Constants()
    plan = row_plan(model, row)
    device = get_device(row.gpu)
    # the engine's own total when it printed one, else this tool's usable device memory
    cap = (
        row.total_gpu_gib * GIB
        if row.total_gpu_gib is not None
        else device.hbm_gb * GIB * USABLE_FRACTION
    )
    w = weight_bytes_per_device(model, plan)
    budget = row.max_num_batched_tokens or 0
    seqs = row.max_num_seqs or 0
    kind = RULE_KIND[row.peak_rule]
    if row.peak_rule in (PEAK_FREE_MEMORY, PEAK_ALLOCATED):
        act, runtime = profiling_terms(
            model,
            plan,
            budget,
            seqs,
            row.peak_rule,
            c.sampler_copies,
            c.base,
            c.group_extra,
            c.reserved_ratio,
        )
    elif row.peak_rule == "free-fraction":  # no vLLM profiling step: the legacy rule
        act, runtime = legacy_activation_bytes(model, plan, budget, seqs), RUNTIME_RESERVE_BYTES
    else:  # static fraction: activations live outside the fraction
        act, runtime = 0.0, RUNTIME_RESERVE_BYTES
    kvt = kv_bytes_per_token_per_device(model, plan)
    pred = kv_pool_bytes(cap, w, act, row.memory_fraction, kind, runtime)
    return Replay(
        row=row,
        capacity=cap,
        weights=w,
        activation=act,
        runtime=runtime,
        kv_bytes_per_token=kvt,
        predicted_kv=pred,
        logged_kv=logged_kv_bytes(row, kvt),
    )


def sampler_unit_bytes(model: ModelSpec, max_num_seqs: int) -> float:
    """One FP32 [max_num_seqs, vocab] array: the unit SAMPLER_LIVE_COPIES counts."""
    return max_num_seqs * model.vocab_size * DTYPE_BYTES["float"]


def fit_constants(rows: list[LogRow], fallback: Constants | None = None) -> Constants:
    """Fit the allocated-peak constants on `rows` (docs/memory.md, "Fit"):

    - sampler copies: least squares through the origin of the logged activation peaks on the
      FP32 [max_num_seqs, vocab] unit, over allocated-peak rows whose logged peak exceeds the
      forward pass's live tensors by more than 10% (only the sampler can hold the excess);
    - base: the mean non-PyTorch memory the single-device allocated-peak rows logged;
    - group extra: the mean non-PyTorch memory the allocated-peak rows with TP > 1 imply
      (logged when printed, else fraction x total - weights - activations - logged KV) less
      the base;
    - reserved ratio (free-memory rule): least squares through the origin of the reserved
      activation memory each free-memory-difference row implies (fraction x total - weights -
      logged KV - non-PyTorch memory) on its allocated peak.

    Rows in OUTSIDE_MODEL are left out. A constant without rows to fit it keeps `fallback`'s
    value."""
    fb = fallback or Constants()
    alloc = [r for r in rows if r.peak_rule == PEAK_ALLOCATED and r.row_id not in OUTSIDE_MODEL]
    models = {r.model: load_model(r.model) for r in alloc}
    num = den = 0.0
    for r in alloc:
        if r.logged_activation_gib is None or r.max_num_seqs is None:
            continue
        model = models[r.model]
        budget = r.max_num_batched_tokens or 0
        forward = forward_peak_bytes(model, row_plan(model, r), budget)
        if r.logged_activation_gib * GIB <= SAMPLER_EXCESS * forward:
            continue
        unit = sampler_unit_bytes(model, r.max_num_seqs)
        num += r.logged_activation_gib * GIB * unit
        den += unit * unit
    copies = num / den if den else fb.sampler_copies
    single = [r.logged_non_torch_gib * GIB for r in alloc if r.tp == 1 and r.logged_non_torch_gib]
    base = sum(single) / len(single) if single else fb.base
    implied = []
    for r in alloc:
        if r.tp < 2:
            continue
        if r.logged_non_torch_gib is not None:
            implied.append(r.logged_non_torch_gib * GIB)
            continue
        x = replay(r, models[r.model], Constants(copies, base, 0.0))
        implied.append(r.memory_fraction * x.capacity - x.weights - x.activation - x.logged_kv)
    extra = sum(implied) / len(implied) - base if implied else fb.group_extra
    # free-memory rule: reserved activation memory the logged KV implies, on the allocated peak
    num = den = 0.0
    for r in rows:
        if r.peak_rule != PEAK_FREE_MEMORY or r.row_id in OUTSIDE_MODEL:
            continue
        model = models.get(r.model) or load_model(r.model)
        plan = row_plan(model, r)
        budget, seqs = r.max_num_batched_tokens or 0, r.max_num_seqs or 0
        x = replay(r, model, Constants(copies, base, extra, 1.0))
        reserved = (
            r.memory_fraction * x.capacity
            - x.weights
            - x.logged_kv
            - non_torch_bytes(plan.devices_per_stage, base, extra)
        )
        peak = allocated_peak_activation_bytes(model, plan, budget, seqs, copies)
        num += reserved * peak
        den += peak * peak
    ratio = num / den if den else fb.reserved_ratio
    return Constants(copies, base, extra, ratio)


def leave_one_source_out(rows: list[LogRow]) -> dict[str, Replay]:
    """Each row replayed with the constants fitted without its source's rows."""
    full = fit_constants(rows)
    out = {}
    for source in {r.source for r in rows}:
        rest = [r for r in rows if r.source != source]
        c = fit_constants(rest, fallback=full)
        for r in rows:
            if r.source == source:
                out[r.row_id] = replay(r, constants=c)
    return out

"""Compile one plan into the step-cost tables the batching kernel reads.

A step of a stream costs
    overhead + tok_table[n_tok] + seq_table[n_samp] + c_attn * prefill_pairs + c_ctx * decode_ctx
where tok_table holds every cost linear in the step's tokens (GEMMs, norms, collectives, pipeline
send/recv), seq_table the LM head and sampling of the sequences that emit a token, and the two
attention coefficients the prefill (compute-bound) and decode (KV-read-bound) attention kernels.

With pipeline parallelism a stream's step passes every stage; with S virtual engines in flight the
slowest stage sets the pace, so a step costs S x (slowest stage) + (S - 1) send/recv hops.

The tables are the sum of small cost builders, one per cell kind (cells.py, registry `BUILDERS`
keyed by apex_fast.cells.CellKind), each returning its operator row with the model FLOPs, weight
bytes and source behind it; context.py holds the plan's shapes and the device's op costs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from apex_fast import cells as names
from apex_fast.dtypes import compute_dtype
from apex_fast.engines import get_engine
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import peak_flops
from apex_fast.models.spec import ModelSpec, StepFlops
from apex_fast.plans.memory import kv_bytes_per_token_per_device
from apex_fast.plans.plan import Plan
from apex_fast.profiles import analytic
from apex_fast.profiles.measured import combine, cost_model, merge_sources
from apex_fast.sim.costs.cells import (
    BUILDERS,
    XFORMERS_REL_EFFICIENCY,
    CellCost,
    cell_kinds,
)
from apex_fast.sim.costs.context import (
    CUSTOM_AR_MAX_BYTES,
    CellContext,
    custom_all_reduce_time,
    without_unquantised_act_quant,
)
from apex_fast.sim.step_time import HostParams, StepHost, host_params, launch_counts
from apex_fast.sim.stream import StepCosts

__all__ = [
    "CUSTOM_AR_MAX_BYTES",
    "XFORMERS_REL_EFFICIENCY",
    "CellCost",
    "CompiledCosts",
    "compile_costs",
    "custom_all_reduce_time",
]


@dataclass
class CompiledCosts:
    """Step costs of one plan plus the per-operator split used for the time breakdown."""

    costs: StepCosts
    tok_ops: dict[str, np.ndarray]  # op name -> seconds for n tokens (sums to tok_table)
    seq_ops: dict[str, np.ndarray]  # op name -> seconds for m sampled sequences
    attn_op: str  # op name the attention coefficients belong to
    overhead_op: str
    flops: StepFlops  # model FLOPs of a step (ModelSpec.step_flops), whole replica
    # bytes moved across the replica per stream step
    bytes_per_step: float
    bytes_per_token: float
    bytes_per_ctx: float
    gpus_per_stream: int
    step_host: StepHost | None = None  # how the host parameters enter `costs`
    host: HostParams | None = None
    attention_backend: str = "flash-attn"
    provenance: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cost_source: str = analytic.PROVENANCE  # one line: which tables / model the costs came from
    cells: tuple[CellCost, ...] = ()  # the cell builders' records the tables were summed from

    def with_host(self, host: HostParams) -> StepCosts:
        """These step costs with other host parameters (the GPU tables unchanged)."""
        assert self.step_host is not None
        return dataclasses.replace(self.costs, **self.step_host.fields(host))


def _rows(
    records: list[CellCost],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """Operator rows (per token, per sampled sequence) and their sources: records of the same
    name add up, in order."""
    tok: dict[str, np.ndarray] = {}
    seq: dict[str, np.ndarray] = {}
    sources: dict[str, tuple[str, ...]] = {}
    for rec in records:
        rows = seq if rec.per_seq else tok
        rows[rec.name] = rows[rec.name] + rec.time if rec.name in rows else rec.time
        sources[rec.name] = merge_sources(sources.get(rec.name, ()), rec.sources)
    return tok, seq, {k: combine(v) for k, v in sources.items()}


def _step_host(
    model: ModelSpec,
    plan: Plan,
    backend: str,
    custom_all_reduce: bool,
    engine: str,
    enforce_eager: bool,
    frontend_in_process: bool,
    num_scheduler_steps: int,
) -> StepHost:
    """How the engine's host parameters enter the step costs (launch counts, CUDA graphs)."""
    prof = get_engine(engine)
    piecewise = prof.graphs_prefill and not enforce_eager
    if enforce_eager or not prof.cuda_graphs_default:
        graph_max = 0  # every step launches its kernels
    elif piecewise:
        graph_max = 0  # no whole-model graph: every step replays pieces around attention
    else:
        graph_max = prof.max_graphed_decode_batch
    return StepHost(
        launch=without_unquantised_act_quant(
            launch_counts(model, plan, backend, custom_all_reduce, engine), model, plan
        ),
        backend=backend,
        frontend_in_process=frontend_in_process,
        num_scheduler_steps=num_scheduler_steps,
        graph_max_seqs=graph_max,
        piecewise=piecewise,
        piecewise_tokens=prof.graphed_prefill_max_tokens,
    )


def _bytes_moved(model: ModelSpec, plan: Plan, cx: CellContext) -> tuple[float, float]:
    """(weights read per step, KV bytes read per context token) over the replica. Weights: all
    of them (for MoE every expert, an upper bound the metrics narrow to the routed experts)."""
    layers = model.num_layers
    kv_tok = kv_bytes_per_token_per_device(model, plan) / max(plan.layers_per_stage) * layers
    return cx.all_weight_bytes() + cx.replicated_kv_weight_bytes(), kv_tok * plan.tp


def compile_costs(
    model: ModelSpec,
    cluster: Cluster,
    plan: Plan,
    max_tokens: int,
    max_seqs: int,
    clock_mhz: int | None = None,
    custom_all_reduce: bool = True,
    profile_dir: str | None = None,
    capacity_factor: float = 1.0,
    cross_kv_layers: int = 0,
    attention_backend: str = "auto",
    host: HostParams | None = None,
    frontend_in_process: bool = False,
    engine: str = "vllm-0.6",
    enforce_eager: bool = False,
    num_scheduler_steps: int = 1,
) -> CompiledCosts:
    """Step-cost tables of `plan`. For an encoder (model.arch == "encoder") attention is
    bidirectional and there is no LM head; `cross_kv_layers` adds, per encoder token, the K/V
    projections that the decoder's cross-attention layers need (computed once per request)."""
    # measured tables (profile_data/ or profile_dir) where they exist, analytic elsewhere
    cm = cost_model(cluster, clock_mhz, profile_dir)
    backend = attention_backend
    if backend == "auto":
        backend = get_engine(engine).attention_kernel(plan.kv_dtype, cluster.device.name)
    prof = get_engine(engine)
    cx = CellContext(
        model, cluster, plan, cm, max_tokens, max_seqs, backend,
        capacity_factor, cross_kv_layers, custom_all_reduce,
        prof.block_fp8_dense_kernel, prof.fused_moe_kernel, prof.moe_ep_expert_map,
    )  # fmt: skip
    records = [r for kind in cell_kinds(model.is_moe, model.is_mla) for r in BUILDERS[kind](cx)]
    tok_ops, seq_ops, prov = _rows(records)
    attn = next(r for r in records if r.name == names.ATTENTION)
    step_host = _step_host(
        model, plan, backend, custom_all_reduce, engine, enforce_eager,
        frontend_in_process, num_scheduler_steps,
    )  # fmt: skip
    host = host or host_params(engine)
    costs = StepCosts(
        tok_table=np.sum(np.stack(list(tok_ops.values())), axis=0),
        seq_table=np.sum(np.stack(list(seq_ops.values())), axis=0),
        c_attn=float(attn.pair_s),
        c_ctx=float(attn.ctx_s),
        **step_host.fields(host),
    )
    weights, kv_read_tok = _bytes_moved(model, plan, cx)
    notes: list[str] = []
    _, peak_note = peak_flops(
        cluster.device, compute_dtype(plan.weight_dtype, plan.activation_dtype)
    )
    if peak_note:
        notes.append(peak_note)
    notes.extend(cm.notes)
    notes.extend(cx.notes)
    prov[names.STEP_OVERHEAD] = "fitted to vLLM runs (docs/validation.md)"
    prov[names.SEQ_OVERHEAD] = (
        "published profile + fitted front end" if frontend_in_process else "published profile"
    ) + " (docs/validation.md)"
    prov[names.LAUNCH_FLOOR] = f"{step_host.launch.total} launches x fitted CPU cost"
    return CompiledCosts(
        costs=costs,
        tok_ops=tok_ops,
        seq_ops=seq_ops,
        attn_op=names.ATTENTION,
        overhead_op=names.STEP_OVERHEAD,
        flops=cx.step_flops,
        bytes_per_step=weights,
        bytes_per_token=kv_read_tok,
        bytes_per_ctx=kv_read_tok,
        gpus_per_stream=plan.devices_per_stage,
        step_host=step_host,
        host=host,
        attention_backend=backend,
        provenance=prov,
        notes=notes,
        cost_source=cm.summary(),
        cells=tuple(records),
    )

"""Compile one plan into the step-cost tables the batching kernel reads.

A step of a stream costs
    overhead + tok_table[n_tok] + seq_table[n_samp] + c_attn * prefill_pairs + c_ctx * decode_ctx
where tok_table holds every cost linear in the step's tokens (GEMMs, norms, collectives, pipeline
send/recv), seq_table the LM head and sampling of the sequences that emit a token, and the two
attention coefficients the prefill (compute-bound) and decode (KV-read-bound) attention kernels.

With pipeline parallelism a stream's step passes every stage; with S virtual engines in flight the
slowest stage sets the pace, so a step costs S x (slowest stage) + (S - 1) send/recv hops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from apex_fast.dtypes import DTYPE_BYTES, compute_dtype
from apex_fast.hardware.cluster import Cluster
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.memory import kv_heads_per_device
from apex_fast.plans.plan import Plan
from apex_fast.profiles import analytic
from apex_fast.profiles.measured import combine, cost_model
from apex_fast.sim import engine_params as ep
from apex_fast.sim.stream import StepCosts

# vLLM's custom all-reduce handles messages up to 8 MiB inside an NVLink node
# (vllm/distributed/device_communicators/custom_all_reduce.py, max_size default).
CUSTOM_AR_MAX_BYTES = 8 * 1024 * 1024


def custom_all_reduce_time(dm: analytic.DeviceModel, nbytes: np.ndarray, group: int) -> np.ndarray:
    """One-kernel NVLink all-reduce: a fixed latency plus the ring volume at the link rate."""
    link = dm.device.intra_node_gbps * 1e9
    vol = 2.0 * (group - 1) / group * np.asarray(nbytes, dtype=np.float64)
    return ep.CUSTOM_AR_LATENCY_S + vol / link


@dataclass
class CompiledCosts:
    """Step costs of one plan plus the per-operator split used for the time breakdown."""

    costs: StepCosts
    tok_ops: dict[str, np.ndarray]  # op name -> seconds for n tokens (sums to tok_table)
    seq_ops: dict[str, np.ndarray]  # op name -> seconds for m sampled sequences
    attn_op: str  # op name the attention coefficients belong to
    overhead_op: str
    # model FLOPs and bytes moved, per stream step (whole replica)
    flops_per_token: float
    flops_per_seq: float
    flops_per_pair: float
    flops_per_ctx: float
    bytes_per_step: float
    bytes_per_token: float
    bytes_per_ctx: float
    gpus_per_stream: int
    provenance: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cost_source: str = analytic.PROVENANCE  # one line: which tables / model the costs came from


def _zero_first(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).copy()
    a[0] = 0.0
    return a


def compile_costs(
    model: ModelSpec,
    cluster: Cluster,
    plan: Plan,
    max_tokens: int,
    max_seqs: int,
    clock_mhz: int | None = None,
    custom_all_reduce: bool = True,
    profile_dir: str | None = None,
) -> CompiledCosts:
    # measured tables (profile_data/ or profile_dir) where they exist, analytic elsewhere
    cm = cost_model(cluster, clock_mhz, profile_dir)
    dm = cm.dm
    wb = DTYPE_BYTES[plan.weight_dtype]
    ab = DTYPE_BYTES[plan.activation_dtype]
    kvb = DTYPE_BYTES[plan.kv_dtype]
    cdt = compute_dtype(plan.weight_dtype, plan.activation_dtype)
    tp, pp = plan.tp, plan.pp
    h, hd = model.hidden_size, model.head_dim
    q_dev = model.num_heads // tp
    kv_dev = kv_heads_per_device(model, tp)
    inter = model.intermediate_size // tp
    # layers on the critical path: S x the largest stage
    lx = pp * max(plan.layers_per_stage)
    n = np.arange(max_tokens + 1, dtype=np.float64)
    m = np.arange(max_seqs + 1, dtype=np.float64)

    def gemm(mm: int, kk: int, nn: np.ndarray) -> np.ndarray:
        return _zero_first(cm.gemm(mm, kk, nn, wb, ab, cdt))

    def mem(nbytes: np.ndarray) -> np.ndarray:
        return _zero_first(cm.mem(nbytes))

    inter_tp = cluster.spans_nodes(tp)
    attn_name = "Attention"
    ffn_name = "SwiGLU" if model.gated_ffn else "MLP"
    attn = gemm((q_dev + 2 * kv_dev) * hd, h, n) + gemm(h, q_dev * hd, n)
    attn = attn + _zero_first(np.full_like(n, analytic.attn_launch_time(dm)))
    prov = {attn_name: cm.take()}
    if model.gated_ffn:
        ffn = gemm(2 * inter, h, n) + gemm(h, inter, n)
        act_bytes = 3 * n * inter * ab
    else:
        ffn = gemm(inter, h, n) + gemm(h, inter, n)
        act_bytes = 2 * n * inter * ab
    prov[ffn_name] = cm.take()
    # fused residual-add + RMSNorm twice, rotary embedding, FFN activation
    elem = 2 * mem(4 * n * h * ab) + mem(2 * n * (q_dev + kv_dev) * hd * ab) + mem(act_bytes)
    tok_ops: dict[str, np.ndarray] = {
        attn_name: lx * attn,
        ffn_name: lx * ffn,
        "Norms & elementwise": lx * elem + mem(2 * n * h * ab),  # + embedding lookup
    }
    prov["Norms & elementwise"] = cm.take()
    if tp > 1:
        ar_bytes = n * h * ab
        ar = _zero_first(cm.collective("all_reduce", ar_bytes, tp, inter_tp, plan.activation_dtype))
        prov["AllReduce"] = cm.take()
        if custom_all_reduce and not inter_tp:
            car = _zero_first(custom_all_reduce_time(dm, ar_bytes, tp))
            use_car = (ar_bytes <= CUSTOM_AR_MAX_BYTES) & (car < ar)
            ar = np.where(use_car, car, ar)
            if use_car.any():
                prov["AllReduce"] = combine([prov["AllReduce"], "analytic (custom all-reduce)"])
        # one AllReduce after attention and one after the FFN, per layer; one for the
        # vocabulary-parallel embedding
        tok_ops["AllReduce"] = (2 * lx + 1) * ar
    if pp > 1:
        inter_pp = cluster.spans_nodes(tp * pp)
        sr = _zero_first(cm.collective("sendrecv", n * h * ab, 2, inter_pp, plan.activation_dtype))
        prov["SendRecv"] = cm.take()
        tok_ops["SendRecv"] = (pp - 1) * sr
    vocab_dev = -(-model.vocab_size // tp)
    lm = gemm(vocab_dev, h, m)
    sample = mem(3 * m * model.vocab_size * 4.0)  # FP32 logits: softmax + sampling passes
    if tp > 1:
        lm = lm + _zero_first(
            cm.collective("all_gather", m * vocab_dev * 4.0 * tp, tp, inter_tp, "float")
        )
    prov["LM head & sampling"] = cm.take()
    seq_ops = {"LM head & sampling": lm + sample}
    tok_table = np.sum(np.stack(list(tok_ops.values())), axis=0)
    seq_table = np.sum(np.stack(list(seq_ops.values())), axis=0)
    c_attn = lx * cm.attn_prefill_time_per_pair(q_dev, hd, cdt)
    c_ctx = lx * cm.attn_decode_time_per_token(kv_dev, hd, kvb)
    prov[attn_name] = combine([prov[attn_name], cm.take()])
    costs = StepCosts(
        tok_table=tok_table,
        seq_table=seq_table,
        c_attn=float(c_attn),
        c_ctx=float(c_ctx),
        overhead=ep.ENGINE_STEP_OVERHEAD_S,
        # steps with prefill tokens run eagerly (vLLM captures CUDA graphs for decode batches
        # only): they last at least the CPU time to launch every layer's kernels
        eager_floor=model.num_layers * ep.EAGER_LAYER_OVERHEAD_S,
    )
    layers = model.num_layers
    # model FLOPs (no replicated work) and bytes moved across the replica per step
    flops_tok = 2.0 * layers * model.block_params()
    flops_seq = 2.0 * h * model.vocab_size
    flops_pair = 4.0 * layers * model.num_heads * hd
    kv_read_tok = layers * 2 * kv_dev * tp * hd * kvb
    weights = (
        layers * model.block_params() + model.embedding_params() + model.lm_head_params()
    ) * wb
    if tp > model.num_kv_heads:
        weights += layers * 2 * h * hd * (tp - model.num_kv_heads) * wb
    notes: list[str] = []
    peak_note = getattr(dm, "note", "")
    if peak_note:
        notes.append(peak_note)
    notes.extend(cm.notes)
    prov = {k: prov.get(k, analytic.PROVENANCE) for k in [*tok_ops, *seq_ops]}
    prov["Engine step overhead"] = "fitted to vLLM runs (docs/validation.md)"
    prov["Eager-mode launch floor"] = "fitted to vLLM runs (docs/validation.md)"
    return CompiledCosts(
        costs=costs,
        tok_ops=tok_ops,
        seq_ops=seq_ops,
        attn_op=attn_name,
        overhead_op="Engine step overhead",
        flops_per_token=flops_tok,
        flops_per_seq=flops_seq,
        flops_per_pair=flops_pair,
        flops_per_ctx=flops_pair,
        bytes_per_step=weights,
        bytes_per_token=kv_read_tok,
        bytes_per_ctx=kv_read_tok,
        gpus_per_stream=tp,
        provenance=prov,
        notes=notes,
        cost_source=cm.summary(),
    )

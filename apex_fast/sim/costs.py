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

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from apex_fast.dtypes import DTYPE_BYTES, compute_dtype
from apex_fast.engines import get_engine
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import peak_flops
from apex_fast.models import mla
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.memory import (
    expert_weight_bytes,
    kv_bytes_per_token_per_device,
    kv_heads_per_device,
)
from apex_fast.plans.plan import Plan
from apex_fast.profiles import analytic
from apex_fast.profiles.measured import combine, cost_model
from apex_fast.sim import engine_params as ep
from apex_fast.sim.step_time import HostParams, StepHost, host_params, launch_counts
from apex_fast.sim.stream import StepCosts

# vLLM's custom all-reduce handles messages up to 8 MiB inside an NVLink node
# (vllm/distributed/device_communicators/custom_all_reduce.py, max_size default).
CUSTOM_AR_MAX_BYTES = 8 * 1024 * 1024

# Prefill attention throughput of xFormers' memory-efficient (CUTLASS) kernel relative to
# FlashAttention-2: about 2/3 (FlashAttention-2 paper, arXiv 2307.08691, Fig. 4-6, forward pass,
# head dim 128, A100). vLLM 0.6 uses it for prefill when the KV cache is FP8.
XFORMERS_REL_EFFICIENCY = 0.67


# GPUs older than SM 8.0 (no FlashAttention-2)
_PRE_AMPERE = ("V100", "T4", "P100")


def default_attention_backend(kv_dtype: str, device_name: str) -> str:
    """vLLM 0.6's choice (vllm@0.6.0:vllm/attention/selector.py which_attn_to_use): FlashAttention
    unless the KV cache is FP8 or the GPU is older than SM 8.0, then xFormers for prefill and
    vLLM's PagedAttention kernel for decode."""
    if kv_dtype in ("float8", "int8") or device_name.upper().startswith(_PRE_AMPERE):
        return "xformers"
    return "flash-attn"


def custom_all_reduce_time(dm: analytic.DeviceModel, nbytes: np.ndarray, group: int) -> np.ndarray:
    """One-kernel NVLink all-reduce: a fixed latency plus the ring volume at the link rate."""
    link = dm.device.peer_gbps(group) * 1e9
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
    step_host: StepHost | None = None  # how the host parameters enter `costs`
    host: HostParams | None = None
    attention_backend: str = "flash-attn"
    provenance: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cost_source: str = analytic.PROVENANCE  # one line: which tables / model the costs came from

    def with_host(self, host: HostParams) -> StepCosts:
        """These step costs with other host parameters (the GPU tables unchanged)."""
        assert self.step_host is not None
        return dataclasses.replace(self.costs, **self.step_host.fields(host))


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
    dm = cm.dm
    wb = DTYPE_BYTES[plan.weight_dtype]
    ab = DTYPE_BYTES[plan.activation_dtype]
    kvb = DTYPE_BYTES[plan.kv_dtype]
    cdt = compute_dtype(plan.weight_dtype, plan.activation_dtype)
    tp, pp = plan.tp, plan.pp
    r = plan.attn_replicas
    d = plan.devices_per_stage
    h, hd = model.hidden_size, model.head_dim
    q_dev = model.num_heads // tp
    kv_dev = kv_heads_per_device(model, tp)
    # layers on the critical path: S x the largest stage
    lx = pp * max(plan.layers_per_stage)
    n = np.arange(max_tokens + 1, dtype=np.float64)
    m = np.arange(max_seqs + 1, dtype=np.float64)
    n_attn = np.ceil(n / r)  # each attention copy serves its share of the batch

    def gemm(mm: int, kk: int, nn: np.ndarray) -> np.ndarray:
        return _zero_first(cm.gemm(mm, kk, nn, wb, ab, cdt))

    def mem(nbytes: np.ndarray) -> np.ndarray:
        return _zero_first(cm.mem(nbytes))

    backend = attention_backend
    if backend == "auto":
        backend = get_engine(engine).attention_kernel(plan.kv_dtype, cluster.device.name)
    # W8A8 FP8 (vLLM --quantization fp8): every linear first quantises its input with dynamic
    # per-tensor scales: a max-reduction pass over the activations, a quantisation pass (read
    # them, write FP8) and a one-float fill for the scale (sim/step_time.py K_FP8_ACT_QUANT)
    w8a8 = plan.weight_dtype == "float8" and plan.activation_dtype == "float8"

    def act_quant(k: float, ntok: np.ndarray) -> np.ndarray:
        if not w8a8:
            return np.zeros_like(ntok)
        vals = ntok * k
        return mem(vals * ab) + mem(vals * (ab + 1.0)) + mem(np.where(ntok > 0, 4.0, 0.0))

    attn_name = "Attention"
    if model.is_mla:  # projections GEMM by GEMM, sharded as vLLM does (apex_fast/models/mla.py)
        attn = mla.mla_projection_time(gemm, model, tp, n_attn)
    else:
        attn = gemm((q_dev + 2 * kv_dev) * hd, h, n_attn) + gemm(h, q_dev * hd, n_attn)
        attn = attn + act_quant(h, n_attn) + act_quant(q_dev * hd, n_attn)
    if model.arch == "encoder-decoder":
        # cross-attention: query and output projections per decoder token (its K/V come with
        # the encoder output, see cross_kv_layers)
        attn = attn + gemm(q_dev * hd, h, n_attn) + gemm(h, q_dev * hd, n_attn)
    attn = attn + _zero_first(np.full_like(n, analytic.attn_launch_time(dm)))
    prov = {attn_name: cm.take()}
    if cross_kv_layers:
        ckv = cross_kv_layers * gemm(2 * kv_dev * hd, h, n_attn)
    gated = 2 if model.gated_ffn else 1
    if model.is_moe:
        ffn_name = "MoE"
        e_all = model.num_experts
        k = max(model.topk, 1)
        width = model.moe_intermediate_size // plan.ffn_tp
        experts_dev = e_all / max(plan.ep, 1)
        # routing: an expert gets a token with probability k/E; of n tokens it expects n k / E,
        # the most loaded is bounded by the capacity factor; only experts with tokens run
        p_act = 1.0 - (1.0 - k / e_all) ** n
        with np.errstate(invalid="ignore", divide="ignore"):
            n_e = np.where(p_act > 0, capacity_factor * n * k / e_all / p_act, 0.0)
        n_e = np.minimum(np.maximum(n_e, 1.0), n)
        # the device's active experts run as one grouped GEMM per projection (fused MoE)
        active = _zero_first(experts_dev * p_act)
        ewb = expert_weight_bytes(model, plan.weight_dtype)
        one = analytic.grouped_gemm_time(dm, gated * width, h, n_e, active, ewb, ab, cdt)
        one = one + analytic.grouped_gemm_time(dm, h, width, n_e, active, ewb, ab, cdt)
        ffn = one + gemm(e_all, h, np.ceil(n / d))  # + router
        ffn = ffn + act_quant(h, np.ceil(n / d)) + act_quant(width, np.ceil(n * k / d))
        if model.num_shared_experts:
            sw = model.num_shared_experts * model.moe_intermediate_size // d
            ffn = ffn + gemm(gated * sw, h, n) + gemm(h, sw, n)
        act_bytes = (gated + 1) * np.ceil(n * k * capacity_factor / max(plan.ep, 1)) * width * ab
    else:
        ffn_name = "SwiGLU" if model.gated_ffn else "MLP"
        inter = model.intermediate_size // plan.ffn_tp
        n_ffn = np.ceil(n / plan.ffn_replicas)  # each FFN copy serves its share of the batch
        ffn = gemm(gated * inter, h, n_ffn) + gemm(h, inter, n_ffn)
        ffn = ffn + act_quant(h, n_ffn) + act_quant(inter, n_ffn)
        act_bytes = (gated + 1) * n_ffn * inter * ab
    prov[ffn_name] = cm.take()
    # fused residual-add + RMSNorm twice, rotary embedding, FFN activation
    elem = (
        2 * mem(4 * n_attn * h * ab) + mem(2 * n_attn * (q_dev + kv_dev) * hd * ab) + mem(act_bytes)
    )
    tok_ops: dict[str, np.ndarray] = {
        attn_name: lx * attn + (pp * ckv if cross_kv_layers else 0.0),
        ffn_name: lx * ffn,
        "Norms & elementwise": lx * elem + mem(2 * n * h * ab),  # + embedding lookup
    }
    prov["Norms & elementwise"] = cm.take()

    def collective(kind: str, nbytes: np.ndarray, group: int, spans: bool) -> np.ndarray:
        t = _zero_first(cm.collective(kind, nbytes, group, spans, plan.activation_dtype))
        custom = custom_all_reduce and not spans and cluster.custom_all_reduce_ok(group)
        if kind == "all_reduce" and custom:
            car = _zero_first(custom_all_reduce_time(dm, nbytes, group))
            t = np.where((nbytes <= CUSTOM_AR_MAX_BYTES) & (car < t), car, t)
        return t

    # the collectives that reshape activations between cells, per block
    for c in plan.collectives:
        if c.group <= 1:
            continue
        spans = cluster.spans_nodes(c.group * c.stride)
        t = lx * collective(c.kind, c.size_factor * n * h * ab, c.group, spans)
        tok_ops[c.title] = tok_ops.get(c.title, 0.0) + t
        prov[c.title] = combine([prov.get(c.title, ""), cm.take()])
    if d > 1:  # vocabulary-parallel embedding: one all-reduce per step
        t = collective("all_reduce", n * h * ab, d, cluster.spans_nodes(d))
        tok_ops["AllReduce"] = tok_ops.get("AllReduce", 0.0) + t
        prov["AllReduce"] = combine([prov.get("AllReduce", ""), cm.take()])
    if pp > 1:
        inter_pp = cluster.spans_nodes(d * pp)
        sr = _zero_first(cm.collective("sendrecv", n * h * ab, 2, inter_pp, plan.activation_dtype))
        prov["SendRecv"] = cm.take()
        tok_ops["SendRecv"] = (pp - 1) * sr
    vocab_dev = -(-model.vocab_size // d)
    lm = gemm(vocab_dev, h, m)
    sample = mem(3 * m * model.vocab_size * 4.0)  # FP32 logits: softmax + sampling passes
    if model.vocab_size == 0 or model.arch == "encoder":
        lm, sample = np.zeros_like(m), np.zeros_like(m)  # an encoder samples nothing
    elif d > 1:
        lm = lm + _zero_first(
            cm.collective("all_gather", m * vocab_dev * 4.0 * d, d, cluster.spans_nodes(d), "float")
        )
    prov["LM head & sampling"] = cm.take()
    seq_ops = {"LM head & sampling": lm + sample}
    tok_table = np.sum(np.stack(list(tok_ops.values())), axis=0)
    seq_table = np.sum(np.stack(list(seq_ops.values())), axis=0)
    if model.is_mla:  # expanded prefill, weight-absorbed decode over the latent (models/mla.py)
        c_attn = lx * mla.mla_prefill_time_per_pair(dm, model, q_dev, cdt) / r
        c_ctx = lx * mla.mla_decode_time_per_token(dm, model, q_dev, kvb, cdt) / r
    else:
        c_attn = lx * cm.attn_prefill_time_per_pair(q_dev, hd, cdt) / r
        c_ctx = lx * cm.attn_decode_time_per_token(kv_dev, hd, kvb) / r
    if model.arch == "encoder":
        c_attn *= 2.0  # bidirectional: every query sees the whole sequence (L^2 vs L(L+1)/2 pairs)
    if backend == "xformers":
        c_attn /= XFORMERS_REL_EFFICIENCY
    prov[attn_name] = combine([prov[attn_name], cm.take()])
    host = host or host_params(engine)
    launch = launch_counts(model, plan, backend, custom_all_reduce, engine)
    prof = get_engine(engine)
    piecewise = prof.graphs_prefill and not enforce_eager
    if enforce_eager or not prof.cuda_graphs_default:
        graph_max = 0  # every step launches its kernels
    elif piecewise:
        graph_max = 0  # no whole-model graph: every step replays pieces around attention
    else:
        graph_max = prof.max_graphed_decode_batch
    step_host = StepHost(
        launch=launch,
        backend=backend,
        frontend_in_process=frontend_in_process,
        num_scheduler_steps=num_scheduler_steps,
        graph_max_seqs=graph_max,
        piecewise=piecewise,
        piecewise_tokens=prof.graphed_prefill_max_tokens,
    )
    costs = StepCosts(
        tok_table=tok_table,
        seq_table=seq_table,
        c_attn=float(c_attn),
        c_ctx=float(c_ctx),
        **step_host.fields(host),
    )
    layers = model.num_layers
    # model FLOPs (no replicated work) and bytes moved across the replica per step
    edge = model.embedding_params() + model.lm_head_params() + model.extra_params
    flops_tok = 2.0 * max(model.params_active() - edge, 0)
    flops_seq = 2.0 * h * model.vocab_size
    flops_pair = 4.0 * layers * model.num_heads * hd
    kv_read_tok = (
        kv_bytes_per_token_per_device(model, plan) / max(plan.layers_per_stage) * layers * tp
    )
    # weights read per step: all of them (for MoE this counts every expert, an upper bound)
    weights = model.params_total() * wb
    if not model.is_mla and tp > model.num_kv_heads:
        weights += layers * 2 * h * hd * (tp - model.num_kv_heads) * wb
    notes: list[str] = []
    _, peak_note = peak_flops(cluster.device, cdt)
    if peak_note:
        notes.append(peak_note)
    notes.extend(cm.notes)
    prov = {k: prov.get(k, analytic.PROVENANCE) for k in [*tok_ops, *seq_ops]}
    prov["Engine step overhead"] = "fitted to vLLM runs (docs/validation.md)"
    prov["Engine per-sequence overhead"] = (
        "published profile + fitted front end" if frontend_in_process else "published profile"
    ) + " (docs/validation.md)"
    prov["Eager-mode launch floor"] = f"{launch.total} launches x fitted CPU cost"
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
        gpus_per_stream=d,
        step_host=step_host,
        host=host,
        attention_backend=backend,
        provenance=prov,
        notes=notes,
        cost_source=cm.summary(),
    )

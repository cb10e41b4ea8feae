"""Cost builders, one per cell kind of a transformer block, chosen through `BUILDERS`.

Each builder reads the plan's shapes from a `CellContext` and returns `CellCost` records: the
seconds of its operator row as a table over the step's tokens (or sampled sequences for the LM
head), the model FLOPs and weight bytes behind them, and where the seconds came from. The cost
compiler (apex_fast/sim/costs/__init__.py) adds the records up into the kernel's step tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from apex_fast import cells as names
from apex_fast.cells import CellKind
from apex_fast.models import mla
from apex_fast.profiles import analytic
from apex_fast.profiles.measured import OpCost, combine
from apex_fast.sim.costs.context import CellContext, zero_first

# Prefill attention throughput of xFormers' memory-efficient (CUTLASS) kernel relative to
# FlashAttention-2: about 2/3 (FlashAttention-2 paper, arXiv 2307.08691, Fig. 4-6, forward pass,
# head dim 128, A100). vLLM 0.6 uses it for prefill when the KV cache is FP8.
XFORMERS_REL_EFFICIENCY = 0.67


@dataclass(frozen=True)
class CellCost:
    """One operator row of the time breakdown, as one cell builder computed it.

    `time` is seconds per step of a stream (all the layers on its critical path), indexed by the
    step's tokens (`per_seq` False) or by its sampled sequences (`per_seq` True). `flops` are the
    model FLOPs per token (per sampled sequence for the LM head) over the whole model, `weight_bytes`
    the weights the cell reads per step over the replica. Attention also carries the seconds per
    prefill (query, key) pair and per decode context token (`pair_s`, `ctx_s`)."""

    name: str
    time: np.ndarray
    sources: tuple[str, ...]
    flops: float = 0.0
    weight_bytes: float = 0.0
    per_seq: bool = False
    pair_s: float = 0.0
    ctx_s: float = 0.0

    @property
    def source(self) -> str:
        return combine(self.sources)


def _cell(name: str, cost: OpCost, **kw: float | bool) -> CellCost:
    return CellCost(name=name, time=cost.t, sources=cost.sources, **kw)  # type: ignore[arg-type]


def _attention_cell(cx: CellContext, proj: OpCost, pair: OpCost, ctx: OpCost) -> list[CellCost]:
    """The attention row from one layer's projections on one device and the attention kernels'
    seconds per prefill (query, key) pair and per decode context token: adds the cross-attention
    of an encoder-decoder, the kernels' launch, the decoder's cross-attention K/V computed by an
    encoder, all the layers of the step, and the backend's prefill efficiency."""
    model, n_attn, hd, h = cx.model, cx.n_attn, cx.model.head_dim, cx.model.hidden_size
    if model.arch == "encoder-decoder":
        # cross-attention: query and output projections per decoder token (its K/V come with
        # the encoder output, see cross_kv_layers)
        proj = proj + cx.gemm(cx.q_dev * hd, h, n_attn) + cx.gemm(h, cx.q_dev * hd, n_attn)
    proj = proj + zero_first(np.full_like(cx.n, analytic.attn_launch_time(cx.dm)))
    t = cx.lx * proj
    if cx.cross_kv_layers:  # the decoder's cross-attention K/V, per encoder token
        t = t + cx.plan.pp * (cx.cross_kv_layers * cx.gemm(2 * cx.kv_dev * hd, h, n_attn))
    r = cx.plan.attn_replicas
    c_attn = cx.lx * pair.t / r
    if model.arch == "encoder":
        c_attn *= 2.0  # bidirectional: every query sees the whole sequence (L^2 vs L(L+1)/2 pairs)
    if cx.backend == "xformers":
        c_attn /= XFORMERS_REL_EFFICIENCY
    src = t + pair + ctx  # the row's source: projections, then the attention kernels
    return [
        CellCost(
            name=names.ATTENTION,
            time=t.t,
            sources=src.sources,
            flops=cx.cell_flops["attention"],
            weight_bytes=cx.cell_params["attention"] * cx.wb
            + cx.replicated_kv_weight_bytes()
            + cx.unquantised_extra_weight_bytes("attention"),
            pair_s=float(c_attn),
            ctx_s=float(cx.lx * ctx.t / r),
        )
    ]


def attention(cx: CellContext) -> list[CellCost]:
    """Multi-/grouped-query attention: fused QKV and output projections (with their FP8 input
    quantisation under W8A8), the prefill kernel (measured table or analytic) and the decode
    kernel (KV read)."""
    n_attn, hd, h, q_dev = cx.n_attn, cx.hd, cx.model.hidden_size, cx.q_dev
    qkv = (q_dev + 2 * cx.kv_dev) * hd
    proj = cx.gemm(qkv, h, n_attn) + cx.gemm(h, q_dev * hd, n_attn)
    proj = proj + cx.act_quant(h, n_attn) + cx.act_quant(q_dev * hd, n_attn)
    proj = cx.per_layer(
        "attention",
        proj,
        lambda: cx.gemm_unquantised(qkv, h, n_attn) + cx.gemm_unquantised(h, q_dev * hd, n_attn),
    )
    # Q.K^T and P.V run in 16 bits even under W8A8 FP8 (analytic.attention_compute_dtype)
    adt = analytic.attention_compute_dtype(cx.plan.activation_dtype)
    pair = cx.cm.attn_prefill_time_per_pair(q_dev, hd, adt)
    ctx = cx.cm.attn_decode_time_per_token(cx.kv_dev, hd, cx.kvb)
    return _attention_cell(cx, proj, pair, ctx)


def block_fp8(cx: CellContext) -> bool:
    """Whether the plan's FP8 weights are the checkpoint's own block-scaled FP8 (DeepSeek-V3/R1:
    128x128 weight blocks, 1x128 activation groups), run by block-scaled GEMM kernels."""
    return cx.plan.weight_dtype == "float8" and cx.model.native_weight_dtype == "float8"


# block-FP8 activations carry one FP32 scale per group of 128 values (DeepSeek-V3 config
# quantization_config.weight_block_size [128, 128]; activations quantised per 1x128 group)
BLOCK_FP8_GROUP = 128


def block_fp8_gemm(cx: CellContext, mm: int, kk: int, nn: np.ndarray) -> OpCost:
    """A block-scaled FP8 linear (analytic: no measured tables hold such kernels): its input
    quantised per 1x128 group in one pass (read 16 bits, write FP8 and one FP32 scale per group:
    vLLM 0.8.4 fp8_utils.py `apply_w8a8_block_fp8_linear` -> per_token_group_quant_fp8 before
    each GEMM; SGLang and TensorRT-LLM the same before theirs), then the GEMM at the rate of the
    engine's block-FP8 kernel for dense linears (analytic.BLOCK_FP8_KERNEL_RATE)."""
    rate = analytic.BLOCK_FP8_KERNEL_RATE[cx.dense_fp8_kernel]
    t = analytic.gemm_time(
        cx.dm, mm, kk, nn, cx.wb, cx.ab, cx.cdt, block_scaled=True, kernel_rate=rate
    )
    quant = cx.mem(np.asarray(nn, dtype=np.float64) * kk * block_fp8_quant_bytes(cx))
    return OpCost(zero_first(t), (analytic.PROVENANCE,)) + quant


def block_fp8_quant_bytes(cx: CellContext) -> float:
    """Bytes one value costs in a 1x128-group FP8 quantisation pass: read in the activation
    dtype, write one byte, plus one FP32 scale per group."""
    return cx.ab + 1.0 + 4.0 / BLOCK_FP8_GROUP


# Row tiles of the Triton fused-MoE kernel (vLLM 0.8.4 and SGLang 0.4.x fused_moe.py): each
# expert's tokens are padded to BLOCK_SIZE_M rows. vLLM's tuned configuration for DeepSeek-V3
# experts on H200 (layers/fused_moe/configs/E=256,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,
# block_shape=[128,128].json) uses 16 rows for steps of up to 512 tokens and 64 from 1024; the
# engine takes the configuration of the nearest listed token count (fused_moe.py
# `try_get_optimal_moe_config`), and its default block-FP8 configuration (`get_default_config`)
# also has 64 rows.
TRITON_MOE_TILE_SMALL = 16
TRITON_MOE_TILE_LARGE = 64
TRITON_MOE_LARGE_FROM_TOKENS = 769  # nearer the 1024-token entry than the 512-token one


def moe_tile_rows(cx: CellContext, n: np.ndarray) -> np.ndarray | float:
    """Rows each expert's tokens are padded to, by the step's tokens `n`. The tuned
    configurations are keyed by the device's experts and width; with experts spread over
    devices (EP) the Triton kernel falls back to the default configuration, 64 rows at every
    batch (vLLM shipped the first such configuration for DeepSeek-V3, E=32 N=2048 on H200, in
    October 2025: https://github.com/vllm-project/vllm/pull/26331)."""
    if cx.moe_kernel != "triton":
        return float(analytic.WEIGHT_ONLY_TILE_N)
    if cx.plan.ep > 1:
        return float(TRITON_MOE_TILE_LARGE)
    return np.where(n >= TRITON_MOE_LARGE_FROM_TOKENS, TRITON_MOE_TILE_LARGE, TRITON_MOE_TILE_SMALL)


def expert_map_rows(cx: CellContext, n: np.ndarray) -> np.ndarray:
    """Rows (token, expert) pairs the fused MoE's buffers hold on one device: all n x top-k
    with expert parallelism through an expert map (engines/profile.py moe_ep_expert_map),
    else the device's share n x top-k / EP."""
    k, ep = max(cx.model.topk, 1), max(cx.plan.ep, 1)
    if cx.ep_expert_map:
        return n * k
    return np.ceil(n * k / ep)


def mla_attention(cx: CellContext) -> list[CellCost]:
    """Multi-head latent attention (models/mla.py): projections GEMM by GEMM, sharded as vLLM
    does (block-scaled FP8 GEMMs for a block-FP8 checkpoint); prefill with keys and values
    expanded per head, decode weight-absorbed over the latent (both analytic, in 16 bits)."""
    model, q_dev, an = cx.model, cx.q_dev, (analytic.PROVENANCE,)
    adt = analytic.attention_compute_dtype(cx.plan.activation_dtype)
    if block_fp8(cx):
        proj = mla.mla_projection_time(
            lambda m, k, n: block_fp8_gemm(cx, m, k, n), model, cx.plan.tp, cx.n_attn
        )
    else:
        proj = mla.mla_projection_time(cx.gemm, model, cx.plan.tp, cx.n_attn)
    proj = cx.per_layer(
        "attention",
        proj,
        lambda: mla.mla_projection_time(cx.gemm_unquantised, model, cx.plan.tp, cx.n_attn),
    )
    pair = OpCost(mla.mla_prefill_time_per_pair(cx.dm, model, q_dev, adt), an)
    ctx = OpCost(mla.mla_decode_time_per_token(cx.dm, model, q_dev, cx.kvb, adt), an)
    return _attention_cell(cx, proj, pair, ctx)


def dense_ffn(cx: CellContext) -> list[CellCost]:
    """Dense FFN (gated: gate+up then down; else up then down), split over the stage's devices."""
    model, h = cx.model, cx.model.hidden_size
    inter = model.intermediate_size // cx.plan.ffn_tp
    n_ffn = np.ceil(cx.n / cx.plan.ffn_replicas)  # each FFN copy serves its share of the batch
    ffn = cx.gemm(cx.gated * inter, h, n_ffn) + cx.gemm(h, inter, n_ffn)
    ffn = ffn + cx.act_quant(h, n_ffn) + cx.act_quant(inter, n_ffn)
    ffn = cx.per_layer(
        "ffn",
        ffn,
        lambda: (
            cx.gemm_unquantised(cx.gated * inter, h, n_ffn) + cx.gemm_unquantised(h, inter, n_ffn)
        ),
    )
    wbytes = cx.cell_params["ffn"] * cx.wb + cx.unquantised_extra_weight_bytes("ffn")
    name = names.ffn_name(False, model.gated_ffn)
    return [_cell(name, cx.lx * ffn, flops=cx.cell_flops["ffn"], weight_bytes=wbytes)]


def moe(cx: CellContext) -> list[CellCost]:
    """Routed experts as grouped GEMMs (fused MoE), the top-k reduction, the router, and the
    shared experts (block-scaled FP8 GEMMs for a block-FP8 checkpoint).

    Routing: an expert gets a token with probability k/E; of n tokens it expects n k / E, the
    most loaded is bounded by the capacity factor; only experts with tokens run, as one grouped
    GEMM per projection over the device's active experts."""
    model, plan, n, h, d = cx.model, cx.plan, cx.n, cx.model.hidden_size, cx.plan.devices_per_stage
    e_all, k = model.num_experts, max(model.topk, 1)
    width = model.moe_intermediate_size // plan.ffn_tp
    p_act = 1.0 - (1.0 - k / e_all) ** n
    with np.errstate(invalid="ignore", divide="ignore"):
        n_e = np.where(p_act > 0, cx.capacity_factor * n * k / e_all / p_act, 0.0)
    n_e = np.minimum(np.maximum(n_e, 1.0), n)
    active = zero_first((e_all / max(plan.ep, 1)) * p_act)
    sw = model.num_shared_experts * model.moe_intermediate_size // d
    blk = block_fp8(cx)
    tile = moe_tile_rows(cx, n)
    rows = expert_map_rows(cx, n)

    def layer(unq: bool) -> OpCost:
        if unq:
            gemm = cx.gemm_unquantised
        else:
            gemm = (lambda m, kk, nn: block_fp8_gemm(cx, m, kk, nn)) if blk else cx.gemm
        up = cx.grouped_gemm(
            cx.gated * width, h, n_e, active, unquantised=unq, block_scaled=blk, tile_rows=tile
        )
        ffn = OpCost(up, (analytic.PROVENANCE,))
        ffn = ffn + OpCost(
            cx.grouped_gemm(
                h, width, n_e, active, unquantised=unq, block_scaled=blk, tile_rows=tile
            )
        )
        # the down projection leaves each token's k expert outputs ([n k, h] over the device's
        # experts); a reduction kernel reads them and writes the token's sum (vLLM 0.8.4
        # layers/fused_moe/fused_moe.py: intermediate_cache3 then ops.moe_sum; SGLang's
        # fused_moe the same; TensorRT-LLM's finalize-routing kernel)
        ffn = ffn + cx.mem((rows + n) * h * cx.ab)
        if cx.ep_expert_map and plan.ep > 1:
            # row blocks of the other ranks' experts write zeros into both GEMMs' outputs
            # (vLLM 0.8.4 fused_moe_kernel: expert id -1 -> write_zeros_to_output)
            off = n * k * (1.0 - 1.0 / plan.ep)
            ffn = ffn + cx.mem(off * (cx.gated * width + h) * cx.ab)
        ffn = ffn + cx.gemm(e_all, h, np.ceil(n / d))  # + router
        if blk and not unq:
            # block-FP8 experts: both GEMM inputs quantised in 1x128 groups, one pass each
            # (read 16-bit, write FP8 and one FP32 scale per group; vLLM 0.8.4 fused_moe.py
            # invoke_fused_moe_kernel -> per_token_group_quant_fp8, SGLang the same): the
            # hidden states of the step and every row of the intermediate buffer
            per_val = block_fp8_quant_bytes(cx)
            ffn = ffn + cx.mem(n * h * per_val) + cx.mem(rows * width * per_val)
        elif not unq:
            ffn = ffn + cx.act_quant(h, np.ceil(n / d)) + cx.act_quant(width, np.ceil(n * k / d))
        if model.num_shared_experts:
            ffn = ffn + gemm(cx.gated * sw, h, n) + gemm(h, sw, n)
        return ffn

    ffn = cx.per_layer("ffn", layer(False), lambda: layer(True))
    wbytes = cx.cell_params["ffn"] * cx.wb + cx.unquantised_extra_weight_bytes("ffn")
    return [_cell(names.MOE, cx.lx * ffn, flops=cx.cell_flops["ffn"], weight_bytes=wbytes)]


def elementwise(cx: CellContext) -> list[CellCost]:
    """Fused residual-add + RMSNorm twice, rotary embedding and the FFN activation, per layer."""
    h, ab, n_attn = cx.model.hidden_size, cx.ab, cx.n_attn
    elem = 2 * cx.mem(4 * n_attn * h * ab) + cx.mem(
        2 * n_attn * (cx.q_dev + cx.kv_dev) * cx.hd * ab
    )
    elem = elem + cx.mem(cx.ffn_activation_bytes())
    wbytes = cx.cell_params["elementwise"] * cx.wb
    flops = cx.cell_flops["elementwise"]
    return [_cell(names.ELEMENTWISE, cx.lx * elem, flops=flops, weight_bytes=wbytes)]


def embedding(cx: CellContext) -> list[CellCost]:
    """Token embedding lookup (reported with the elementwise kernels)."""
    t = cx.mem(2 * cx.n * cx.model.hidden_size * cx.ab)
    return [_cell(names.ELEMENTWISE, t, weight_bytes=cx.model.embedding_params() * cx.wb)]


def plan_collectives(cx: CellContext) -> list[CellCost]:
    """The collectives that reshape activations between cells, once per block each."""
    out = []
    for c in cx.plan.collectives:
        if c.group <= 1:
            continue
        spans = cx.cluster.spans_nodes(c.group * c.stride)
        t = cx.collective(
            c.kind, c.size_factor * cx.n * cx.model.hidden_size * cx.ab, c.group, spans
        )
        out.append(_cell(names.COLLECTIVE_TITLES[c.kind], cx.lx * t))
    return out


def embedding_all_reduce(cx: CellContext) -> list[CellCost]:
    """Vocabulary-parallel embedding: one all-reduce per step over the stage."""
    d = cx.plan.devices_per_stage
    if d <= 1:
        return []
    nbytes = cx.n * cx.model.hidden_size * cx.ab
    t = cx.collective(names.ALL_REDUCE, nbytes, d, cx.cluster.spans_nodes(d))
    return [_cell(names.COLLECTIVE_TITLES[names.ALL_REDUCE], t)]


def pipeline_send(cx: CellContext) -> list[CellCost]:
    """Activations sent between consecutive pipeline stages: S - 1 hops per step."""
    pp = cx.plan.pp
    if pp <= 1:
        return []
    inter = cx.cluster.spans_nodes(cx.plan.devices_per_stage * pp)
    nbytes = cx.n * cx.model.hidden_size * cx.ab
    sr = cx.cm.collective(names.SEND_RECV, nbytes, 2, inter, cx.plan.activation_dtype)
    return [_cell(names.COLLECTIVE_TITLES[names.SEND_RECV], (pp - 1) * sr.map(zero_first))]


def lm_head(cx: CellContext) -> list[CellCost]:
    """LM head GEMM over the device's vocabulary shard, the all-gather of the logits, and the
    FP32 softmax + sampling passes, per sampled sequence."""
    model, m, d = cx.model, cx.m, cx.plan.devices_per_stage
    vocab_dev = -(-model.vocab_size // d)
    lm = cx.gemm_lm_head(vocab_dev, model.hidden_size, m)
    sample = cx.mem(3 * m * model.vocab_size * 4.0)  # FP32 logits: softmax + sampling passes
    gather = OpCost(np.zeros_like(m))
    samples = model.vocab_size > 0 and model.arch != "encoder"  # an encoder samples nothing
    if samples and d > 1:
        nbytes = m * vocab_dev * 4.0 * d
        gather = cx.cm.collective(names.ALL_GATHER, nbytes, d, cx.cluster.spans_nodes(d), "float")
        gather = gather.map(zero_first)
    t = (lm + gather).t + sample.t if samples else np.zeros_like(m)
    src = lm + sample + gather  # sources in the order the ops are listed above
    wbytes = model.lm_head_params() * cx.eb
    flops = cx.step_flops.per_seq
    row = OpCost(t, src.sources)
    return [_cell(names.LM_HEAD, row, flops=flops, weight_bytes=wbytes, per_seq=True)]


Builder = Callable[[CellContext], list[CellCost]]
BUILDERS: dict[CellKind, Builder] = {
    CellKind.ATTENTION: attention,
    CellKind.MLA: mla_attention,
    CellKind.FFN: dense_ffn,
    CellKind.MOE: moe,
    CellKind.ELEMENTWISE: elementwise,
    CellKind.EMBEDDING: embedding,
    CellKind.COLLECTIVE: plan_collectives,
    CellKind.EMBEDDING_ALL_REDUCE: embedding_all_reduce,
    CellKind.PIPELINE_SEND: pipeline_send,
    CellKind.LM_HEAD: lm_head,
}


def cell_kinds(is_moe: bool, is_mla: bool) -> tuple[CellKind, ...]:
    """The builders of a model's step, in the order of the breakdown rows."""
    return (
        CellKind.MLA if is_mla else CellKind.ATTENTION,
        CellKind.MOE if is_moe else CellKind.FFN,
        CellKind.ELEMENTWISE,
        CellKind.EMBEDDING,
        CellKind.COLLECTIVE,
        CellKind.EMBEDDING_ALL_REDUCE,
        CellKind.PIPELINE_SEND,
        CellKind.LM_HEAD,
    )

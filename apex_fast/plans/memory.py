"""Memory per device for a plan: weights of its shard, activation peak, KV-cache capacity.

The KV pool follows what the engine's memory-fraction knob means (`kv_pool_bytes`; the kinds
are declared in apex_fast/engines/profile.py `MemoryFractionKind`). For vLLM: KV bytes =
utilisation x device memory - weights - the peak activation memory of a profiling step of
`max_num_batched_tokens` tokens - non-PyTorch memory (CUDA context, NCCL and cuBLAS workspaces,
CUDA graphs). The activation and runtime terms are an analytic approximation (documented in
docs/memory.md), not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apex_fast.dtypes import DTYPE_BYTES
from apex_fast.models.mla import mla_weights_per_device
from apex_fast.models.quant import MixedPrecision, active
from apex_fast.models.spec import ModelSpec
from apex_fast.plans.plan import Plan

GIB = 1024**3
# nvidia-smi shows an "80GB" H100 as 81559 MiB: marketed GB are GiB, ~0.45% of which the driver
# keeps; we apply the same 0.9956 factor to every device.
USABLE_FRACTION = 81559 / 81920
# CUDA context + NCCL/cuBLAS workspaces + CUDA graphs, per device (approximation; vLLM 0.6 logs
# typically show 0.5-1.5 GiB of non-torch memory plus a few hundred MiB of CUDA graphs).
RUNTIME_RESERVE_BYTES = 1.5 * GIB
# Peak memory of vLLM's profiling step / bytes of the tensors alive at the FFN (PyTorch's caching
# allocator keeps freed blocks, and temporaries overlap). Fitted on the one capacity figure of
# the reference runs: vLLM 0.6 on 2x H100 with gpu_memory_utilization 0.97 and
# max_num_batched_tokens = max_model_len = 24272 held about 24272 KV tokens per server
# (../shared/reference/README.md); that leaves 7.9 GiB for runtime + activations, i.e. 1.9x the
# live-tensor estimate below on top of the 1.5 GiB runtime reserve.
ACTIVATION_PEAK_FACTOR = 1.9

# How an engine measures the peak memory of its profiling step (EngineProfile.memory_peak_rule;
# docs/memory.md "Profiling peak by engine version").
# free-memory-difference: vLLM <= 0.6.3 (worker `determine_num_available_blocks`: peak = free
#     memory at start - free memory after the profiling step), which counts what PyTorch's
#     caching allocator keeps reserved and every non-PyTorch allocation; modelled as
#     ACTIVATION_PEAK_FACTOR x the live tensors + RUNTIME_RESERVE_BYTES (the calibrated rule).
# allocated-peak: vLLM >= 0.6.4 and V1 (peak = torch.cuda.memory_stats()
#     ["allocated_bytes.all.peak"] + memory allocated outside PyTorch): the largest set of
#     tensors alive at once, no allocator slack, plus non-PyTorch memory (`non_torch_bytes`).
PEAK_FREE_MEMORY = "free-memory-difference"
PEAK_ALLOCATED = "allocated-peak"
PEAK_RULES = (PEAK_FREE_MEMORY, PEAK_ALLOCATED)
# Allocated-peak rule, sampling part of the profiling step: vLLM samples one token for each of
# `max_num_seqs` dummy sequences with top-p/top-k on (V0 model_runner `profile_run` sets
# top_p=0.99, top_k=vocab_size-1; V1 gpu_model_runner `_dummy_sampler_run`), so FP32 logits
# over the whole vocabulary and the sampler's copies of them (softmax, log-softmax, sorted
# values, int64 sort indices, cumulative sums) are alive together; the forward tensors of
# the step are freed by then. Unit: FP32 [max_num_seqs, vocab] arrays alive at the sampler's
# peak. Fitted (bench/memory_logs.py) on vLLM's logged activation peak of Meta-Llama-3-8B on
# H100 at TP1 and TP2 (1.26 GiB both, 256 sequences x 128256 vocab, vllm PR 10511): the peak
# does not shrink with TP, so it is the sampler's, not the forward pass's.
SAMPLER_LIVE_COPIES = 10.3
# Allocated-peak rule, memory outside PyTorch (vLLM's "non_torch_memory"): CUDA context and
# cuBLAS/cuBLASLt workspaces on every device, plus, on a device that talks to others, the NCCL
# communicator buffers (per channel and per ring/tree neighbour, so about constant in the group
# size) and vLLM's custom all-reduce buffers. Documented fit (bench/memory_logs.py, "Fit"):
# - base: mean of the non_torch_memory logged by single-device vLLM rows (1.79 GiB on H100,
#   vllm PR 10511; 0.35 GiB twice on an RTX 3090, vllm issue 10517);
# - group: mean non-PyTorch memory of the vLLM rows with TP > 1 (3.58 GiB logged for
#   Llama-3-8B TP2 on H100, vllm PR 10511; the amount the 8.11 GiB KV pool of
#   Qwen3-235B-A22B-FP8 TP4 on H100 implies, vllm issue 21348) less the base.
NON_TORCH_BASE_BYTES = 0.83 * GIB
NON_TORCH_GROUP_BYTES = 2.23 * GIB
# KV "capacity" of an encoder, which caches nothing: large enough never to bind
ENCODER_BLOCKS = 1 << 40


@dataclass(frozen=True)
class MemoryReport:
    """Per-device memory in bytes for the most loaded device of the plan."""

    capacity: float
    weights: float
    activation: float
    runtime: float
    kv_available: float
    kv_bytes_per_token: float  # per device, all layers of its stage
    kv_blocks_per_replica: int  # blocks of one DP replica (all its pipeline streams together)
    fits: bool
    reason: str
    # attention copies of a stage: each keeps the KV cache of the sequences it serves, so one
    # sequence's cache must fit in one copy (kv_blocks_per_replica counts all copies)
    attn_copies: int = 1

    @property
    def kv_tokens(self) -> int:
        """KV tokens one device holds: the capacity of one attention copy (all its layers)."""
        return int(self.kv_available // self.kv_bytes_per_token) if self.kv_bytes_per_token else 0

    @property
    def kv_tokens_per_copy(self) -> int:
        return self.kv_tokens

    @property
    def kv_tokens_per_replica(self) -> int:
        """KV tokens of one DP replica: every attention copy's cache together."""
        return self.kv_tokens * self.attn_copies

    @property
    def kv_blocks_per_copy(self) -> int:
        return self.kv_blocks_per_replica // max(self.attn_copies, 1)


def kv_heads_per_device(model: ModelSpec, tp: int) -> int:
    """KV heads stored on one device; replicated when there are fewer KV heads than devices."""
    return max(1, model.num_kv_heads // tp)


def attn_weights_per_device(model: ModelSpec, tp: int) -> float:
    """Attention parameters on one device of a `tp`-way head split (KV heads replicated when
    there are fewer of them than devices; MLA's shared latent projections are replicated)."""
    h, hd = model.hidden_size, model.head_dim
    attn_total = model.attn_params_per_layer()
    if model.is_mla:  # replicated down-projections, head-split up/output projections
        return mla_weights_per_device(model, tp)
    qo = 2 * h * model.num_heads * hd
    kv = 2 * h * model.num_kv_heads * hd
    rest = max(0, attn_total - qo - kv)  # biases, q/k norms
    return qo / tp + 2 * h * hd * kv_heads_per_device(model, tp) + rest / tp


def ffn_weights_per_device(model: ModelSpec, plan: Plan) -> float:
    """FFN (or MoE) parameters of one layer on one device."""
    d = plan.devices_per_stage
    if not model.is_moe:
        return model.ffn_params_per_layer() / plan.ffn_tp
    experts = model.num_experts / max(plan.ep, 1) * model.expert_params() / plan.ffn_tp
    shared = model.num_shared_experts * model.expert_params() / d
    return experts + shared + model.router_params()


# dtype of the token embedding and the LM head in a quantised plan: engines quantise linear
# layers only. vLLM's FP8/AWQ/GPTQ methods apply to LinearBase layers, and VocabParallelEmbedding
# / ParallelLMHead stay unquantised unless a checkpoint says otherwise (vllm 0.6.0
# model_executor/layers/quantization/fp8.py `get_quant_method`); NVIDIA ModelOpt's default FP8
# and INT4 configurations exclude `*lm_head*` (TensorRT-LLM checkpoints keep it in bf16).
EDGE_DTYPE = "half"


def edge_weight_dtype(model: ModelSpec, plan: Plan) -> str:
    """Dtype of the token embedding and the LM head: the checkpoint's unquantised dtype when
    the plan's weights are narrower than it, else the plan's weight dtype."""
    mp = plan_mixed_precision(model, plan)
    wide = mp.dtype if mp is not None else EDGE_DTYPE
    if DTYPE_BYTES[plan.weight_dtype] < DTYPE_BYTES[wide]:
        return wide
    return plan.weight_dtype


def weight_bytes_per_device(model: ModelSpec, plan: Plan) -> float:
    """Bytes of weights on the most loaded device (largest stage, plus embedding or LM head,
    which stay unquantised in a quantised plan: `edge_weight_dtype`)."""
    wb = DTYPE_BYTES[plan.weight_dtype]
    d = plan.devices_per_stage
    attn_total = model.attn_params_per_layer()
    other = max(0, model.block_params() - attn_total - model.ffn_params_per_layer())  # norms
    per_layer = (
        attn_weights_per_device(model, plan.tp) + ffn_weights_per_device(model, plan) + other
    )
    layers = max(plan.layers_per_stage)
    emb = model.embedding_params() / d
    head = model.lm_head_params() / d
    if plan.pp > 1 and head == 0:
        head = model.embedding_params() / d  # tied weights: the last stage needs its own copy
    edge = emb + head if plan.pp == 1 else max(emb, head)
    enc = model.encoder_params() / d if model.arch == "encoder-decoder" else 0.0
    experts = layers * routed_expert_params_per_device(model, plan)
    ewb = expert_weight_bytes(model, plan.weight_dtype)
    return (
        (layers * per_layer + enc) * wb
        + edge * DTYPE_BYTES[edge_weight_dtype(model, plan)]
        + experts * (ewb - wb)
        + (model.extra_params * wb / d)
        + unquantised_extra_bytes(model, plan)
    )


def plan_mixed_precision(model: ModelSpec, plan: Plan) -> MixedPrecision | None:
    """The checkpoint's unquantised linears when the plan runs its weights as shipped."""
    return active(model.mixed_precision, plan.weight_dtype)


def stage_layer_ranges(plan: Plan) -> list[tuple[int, int]]:
    """[start, stop) decoder layer indices of each pipeline stage, first stage first."""
    out, start = [], 0
    for n in plan.layers_per_stage:
        out.append((start, start + n))
        start += n
    return out


def unquantised_extra_bytes(model: ModelSpec, plan: Plan) -> float:
    """Bytes the checkpoint's unquantised linears add on the most loaded device over the same
    linears in the plan's weight dtype (0 without mixed precision): the stage holding the most
    unquantised attention and FFN cells (their per-device shards as weight_bytes_per_device
    splits them). The LM head is counted with the embedding (`edge_weight_dtype`)."""
    mp = plan_mixed_precision(model, plan)
    if mp is None:
        return 0.0
    delta = DTYPE_BYTES[mp.dtype] - DTYPE_BYTES[plan.weight_dtype]
    attn = attn_weights_per_device(model, plan.tp)
    ffn = ffn_weights_per_device(model, plan)
    dense = model.dense_ffn_params() / plan.ffn_tp
    ranges = stage_layer_ranges(plan)
    per_stage = []
    for a, b in ranges:
        ffn_bytes = sum(
            dense if model.is_moe and i < model.num_dense_layers else ffn
            for i in mp.ffn_layers
            if a <= i < b
        )
        per_stage.append(mp.layers_in("attention", a, b) * attn + ffn_bytes)
    return delta * max(per_stage)


def routed_expert_params_per_device(model: ModelSpec, plan: Plan) -> float:
    """Routed-expert parameters of one MoE layer on one device (0 for dense models)."""
    if not model.is_moe:
        return 0.0
    return model.num_experts / max(plan.ep, 1) * model.expert_params() / plan.ffn_tp


def expert_weight_bytes(model: ModelSpec, weight_dtype: str) -> float:
    """Bytes per routed-expert weight: the plan's weight dtype, or the checkpoint's own expert
    format when that is smaller (gpt-oss ships its experts as MXFP4, 4.25 bits, and vLLM serves
    them as such whatever the dtype of the other weights)."""
    wb = DTYPE_BYTES[weight_dtype]
    native = model.native_expert_dtype
    return min(wb, DTYPE_BYTES[native]) if native else wb


def forward_live_bytes(model: ModelSpec, plan: Plan, budget: int, with_qkv: bool = True) -> float:
    """Bytes of the tensors alive at the FFN of a layer in a forward pass of `budget` tokens:
    hidden state, residual and norm output (3h), the gate/up output and the activation output
    of the FFN shard, and (`with_qkv`, as the free-memory rule was calibrated) the QKV output.
    MoE: the tokens routed to this device's experts (top-k copies of each token, spread over
    the expert-parallel devices). Without the QKV output, which is freed after attention, this
    is what vLLM's allocated peak logs: 108 KiB per token for Llama-3.1-8B at 20000 and at
    29000 tokens (2.07 and 2.99 GiB, vllm issue 10517) = 3 x 8 KiB + 56 + 28 KiB."""
    ab = DTYPE_BYTES[plan.activation_dtype]
    qkv = (model.num_heads // plan.tp + 2 * kv_heads_per_device(model, plan.tp)) * model.head_dim
    if model.is_moe:
        width = model.moe_intermediate_size * max(model.topk, 1) / max(plan.ep, 1) / plan.ffn_tp
    else:
        width = model.intermediate_size / plan.ffn_tp / plan.ffn_replicas
    ffn = ((2 if model.gated_ffn else 1) + 1) * width
    per_token = (3 * model.hidden_size + (qkv if with_qkv else 0) + ffn) * ab
    return budget * per_token


def activation_bytes(model: ModelSpec, plan: Plan, budget: int, max_num_seqs: int) -> float:
    """Peak activation memory of one step of `budget` tokens as a free-memory-difference
    engine measures it (analytic approximation): ACTIVATION_PEAK_FACTOR x (the forward live
    tensors, `forward_live_bytes`, plus FP32 logits of `max_num_seqs` sequences over the
    vocabulary shard)."""
    d = plan.devices_per_stage
    logits = max_num_seqs * model.vocab_size / d * 4.0
    return ACTIVATION_PEAK_FACTOR * (forward_live_bytes(model, plan, budget) + logits)


def sampler_live_bytes(
    model: ModelSpec, max_num_seqs: int, copies: float = SAMPLER_LIVE_COPIES
) -> float:
    """Bytes alive at the sampler's peak in vLLM's profiling step: `copies` FP32 arrays of
    `max_num_seqs` x the whole vocabulary (logits are gathered before sampling)."""
    return copies * max_num_seqs * model.vocab_size * 4.0


def allocated_peak_activation_bytes(
    model: ModelSpec,
    plan: Plan,
    budget: int,
    max_num_seqs: int,
    sampler_copies: float = SAMPLER_LIVE_COPIES,
) -> float:
    """Activation peak as PyTorch's allocated-bytes peak sees it: the larger of the forward
    pass (`forward_live_bytes` at the FFN, freed before sampling) and the sampler
    (`sampler_live_bytes`)."""
    forward = forward_live_bytes(model, plan, budget, with_qkv=False)
    return max(forward, sampler_live_bytes(model, max_num_seqs, sampler_copies))


def non_torch_bytes(
    group_devices: int,
    base: float = NON_TORCH_BASE_BYTES,
    group_extra: float = NON_TORCH_GROUP_BYTES,
) -> float:
    """Memory outside PyTorch on one device of a collective group of `group_devices` devices
    (allocated-peak rule): `base`, plus `group_extra` of communicator buffers when the device
    talks to others."""
    return base + (group_extra if group_devices > 1 else 0.0)


def profiling_terms(
    model: ModelSpec,
    plan: Plan,
    budget: int,
    max_num_seqs: int,
    peak_rule: str,
    sampler_copies: float = SAMPLER_LIVE_COPIES,
    base: float = NON_TORCH_BASE_BYTES,
    group_extra: float = NON_TORCH_GROUP_BYTES,
) -> tuple[float, float]:
    """(activation peak, runtime / non-PyTorch bytes) per device under an engine's peak rule;
    `sampler_copies`, `base` and `group_extra` override the fitted constants (fits, tests)."""
    if peak_rule == PEAK_FREE_MEMORY:
        return activation_bytes(model, plan, budget, max_num_seqs), RUNTIME_RESERVE_BYTES
    if peak_rule == PEAK_ALLOCATED:
        act = allocated_peak_activation_bytes(model, plan, budget, max_num_seqs, sampler_copies)
        return act, non_torch_bytes(plan.devices_per_stage, base, group_extra)
    raise ValueError(f"unknown memory peak rule {peak_rule!r}")


def kv_bytes_per_token_per_device(model: ModelSpec, plan: Plan) -> float:
    """KV bytes one device stores per cached token of the sequences its attention copy serves."""
    kvb = DTYPE_BYTES[plan.kv_dtype]
    layers = max(plan.layers_per_stage)
    if model.is_mla:  # compressed latent, replicated on every head-parallel device
        return model.kv_bytes_per_token(kvb) / model.num_layers * layers
    return layers * 2 * kv_heads_per_device(model, plan.tp) * model.head_dim * kvb


def kv_pool_bytes(
    cap: float,
    weights: float,
    act: float,
    fraction: float,
    kind: str,
    runtime: float = RUNTIME_RESERVE_BYTES,
) -> float:
    """KV-cache bytes per device for an engine's memory-fraction knob `kind` set to `fraction`
    (negative when nothing is left):

    - ``gpu_memory_utilization`` (vLLM, worker `determine_num_available_blocks`): the fraction
      of the whole device holds weights, the profiled activation peak, non-PyTorch memory and
      the KV cache.
    - ``mem_fraction_static`` (SGLang, model_runner `profile_max_num_token`: rest = free memory
      after loading - total x (1 - fraction)): the fraction holds weights and the KV pool;
      activations and CUDA graphs live in the remaining 1 - fraction. Memory taken while
      loading (CUDA context, communicators) is counted as the runtime reserve, an
      approximation (graphs, also in that reserve, are captured later from the rest).
    - ``kv_cache_free_gpu_mem_fraction`` (TensorRT-LLM `KvCacheConfig.free_gpu_memory_fraction`):
      the fraction of the memory still free once weights, activation buffers and the runtime
      are allocated.

    `runtime` is the memory taken outside weights and activations (the runtime reserve, or
    non-PyTorch memory under the allocated-peak rule).
    """
    if kind == "mem_fraction_static":
        return cap * fraction - weights - runtime
    if kind == "kv_cache_free_gpu_mem_fraction":
        return fraction * (cap - weights - act - runtime)
    if kind != "gpu_memory_utilization":
        raise ValueError(f"unknown memory-fraction kind {kind!r}")
    return cap * fraction - weights - act - runtime


def memory_report(
    model: ModelSpec,
    plan: Plan,
    device_hbm_gb: float,
    gpu_memory_utilization: float,
    budget: int,
    max_num_seqs: int,
    block_size: int,
    fraction_kind: str = "gpu_memory_utilization",
    peak_rule: str = PEAK_FREE_MEMORY,
) -> MemoryReport:
    """Memory of the plan's most loaded device; `gpu_memory_utilization` is the engine's
    memory fraction, read as `fraction_kind` says (`kv_pool_bytes`), and the profiling step's
    peak is measured as `peak_rule` says (`profiling_terms`)."""
    cap = device_hbm_gb * GIB * USABLE_FRACTION
    w = weight_bytes_per_device(model, plan)
    act, runtime = profiling_terms(model, plan, budget, max_num_seqs, peak_rule)
    kv_avail = kv_pool_bytes(cap, w, act, gpu_memory_utilization, fraction_kind, runtime)
    # what the weights must fit in: the fraction, except for TensorRT-LLM whose fraction
    # applies to the memory left after them
    weight_room = (
        cap if fraction_kind == "kv_cache_free_gpu_mem_fraction" else cap * (gpu_memory_utilization)
    )
    kvt = kv_bytes_per_token_per_device(model, plan)
    if model.arch == "encoder":
        kvt = 0.0  # an encoder keeps no KV cache between steps
    # every attention copy of a stage keeps the KV cache of the sequences it serves
    blocks = 0
    if kv_avail > 0 and kvt > 0:
        blocks = int(kv_avail // (kvt * block_size)) * plan.attn_replicas
    elif kv_avail > 0:
        blocks = ENCODER_BLOCKS  # nothing cached: capacity never limits an encoder
    if w > weight_room:
        reason = (
            f"weights need {w / GIB:.1f} GiB per device, more than "
            f"{weight_room / cap:.2f} x {cap / GIB:.1f} GiB"
        )
        fits = False
    elif blocks < 1:
        acts = (
            "" if fraction_kind == "mem_fraction_static" else f" + {act / GIB:.1f} GiB activations"
        )
        room = (
            f"{cap / GIB:.1f} GiB"
            if fraction_kind == "kv_cache_free_gpu_mem_fraction"
            else f"{gpu_memory_utilization:.2f} x {cap / GIB:.1f} GiB"
        )
        reason = (
            f"no room for the KV cache: {w / GIB:.1f} GiB weights{acts} + "
            f"{runtime / GIB:.1f} GiB runtime exceed {room}"
        )
        fits = False
    else:
        reason = ""
        fits = True
    return MemoryReport(
        capacity=cap,
        weights=w,
        activation=act,
        runtime=runtime,
        kv_available=max(kv_avail, 0.0),
        kv_bytes_per_token=kvt,
        kv_blocks_per_replica=max(blocks, 0),
        fits=fits,
        reason=reason,
        attn_copies=plan.attn_replicas,
    )


def copy_seq_blocks(mem: MemoryReport, pp: int, watermark_fraction: float) -> int:
    """KV blocks one sequence may hold in one pipeline stream: one attention copy's share of
    the stream's blocks, less the copy's watermark (vLLM keeps a watermark per cache)."""
    per_copy = mem.kv_blocks_per_copy // max(pp, 1)
    return per_copy - int(watermark_fraction * per_copy)


def expected_experts_touched(num_experts: int, topk: int, tokens: np.ndarray) -> np.ndarray:
    """Expected number of distinct experts that a step of `tokens` tokens routes to, when each
    token picks `topk` distinct experts of `num_experts` uniformly and independently: a given
    expert is missed by one token with probability 1 - k/E, so it is touched with probability
    1 - (1 - k/E)^n and E x that many experts are touched on average."""
    n = np.asarray(tokens, dtype=np.float64)
    if num_experts <= 0:
        return np.zeros_like(n)
    miss = 1.0 - min(max(topk, 0), num_experts) / num_experts
    return num_experts * (1.0 - miss**n)


def moe_step_weight_bytes(
    model: ModelSpec, plan: Plan, all_weight_bytes: float, tokens: np.ndarray
) -> np.ndarray:
    """Weight bytes one step of `tokens` tokens reads from HBM: `all_weight_bytes` (every
    weight of the replica) less the routed experts that no token of the step uses. Expert
    parallelism and expert splitting change who reads an expert, not the total."""
    n = np.asarray(tokens, dtype=np.float64)
    if not model.is_moe:
        return np.full_like(n, all_weight_bytes)
    wb = DTYPE_BYTES[plan.weight_dtype]
    layers = model.num_layers - model.num_dense_layers
    per_expert = model.expert_params() * wb * layers
    idle = model.num_experts - expected_experts_touched(model.num_experts, model.topk, n)
    return all_weight_bytes - idle * per_expert

"""Memory per device for a plan: weights of its shard, activation peak, KV-cache capacity.

The KV pool follows what the engine's memory-fraction knob means (`kv_pool_bytes`; the kinds
are declared in apex_fast/engines/profile.py `MemoryFractionKind`). For vLLM: KV bytes =
utilisation x device memory - weights - the peak activation memory of a profiling step of
`max_num_batched_tokens` tokens - memory outside PyTorch (CUDA context, cuBLAS workspaces, NCCL
and custom all-reduce buffers). The step's peak is built from the named tensors it holds
(`profile_step_tensors`); what the engine version reads of it is its peak rule
(`profiling_terms`). Fitted constants and their sources are below and in docs/memory.md.
"""

from __future__ import annotations

import math
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
# Legacy runtime reserve (engines without vLLM's profiling step: SGLang, TensorRT-LLM): CUDA
# context + NCCL/cuBLAS workspaces + CUDA graphs, per device (approximation; vLLM 0.6 logs
# typically show 0.5-1.5 GiB of non-torch memory plus a few hundred MiB of CUDA graphs).
RUNTIME_RESERVE_BYTES = 1.5 * GIB
# Engines without vLLM's profiling step (TensorRT-LLM sizes its activation buffers when the
# engine is built; SGLang keeps activations outside its static fraction): activation buffers
# = LEGACY_ACTIVATION_FACTOR x the live-tensor estimate (`forward_live_bytes` with the QKV
# output) + LEGACY_RUNTIME_BYTES. This was vLLM's rule until the profiling step was modelled
# tensor by tensor (`profile_step_tensors`); it was fitted on the one capacity figure of the
# reference runs (vLLM 0.6 on 2x H100, gpu_memory_utilization 0.97, 24272-token step, about
# 24272 KV tokens; ../shared/reference/README.md) and is kept unchanged for those engines until
# logs of their own refit it.
LEGACY_ACTIVATION_FACTOR = 1.9

# How an engine measures the peak memory of its profiling step (EngineProfile.memory_peak_rule;
# docs/memory.md "Profiling peak by engine version"). Both are modelled from the same named
# tensors of the step (`profile_step_tensors`, `allocated_peak_activation_bytes`) and the same
# non-PyTorch memory (`non_torch_bytes`):
# free-memory-difference: vLLM <= 0.6.3 (worker `determine_num_available_blocks`: peak = free
#     memory when the worker started - free memory after the profiling step), which counts what
#     PyTorch's caching allocator keeps reserved (RESERVED_PER_ALLOCATED x the allocated peak)
#     and every allocation outside PyTorch made after start-up (NCCL, cuBLAS, custom
#     all-reduce).
# allocated-peak: vLLM >= 0.6.4 and V1 (peak = torch.cuda.memory_stats()
#     ["allocated_bytes.all.peak"] + memory allocated outside PyTorch): the largest set of
#     tensors alive at once, no allocator slack, plus non-PyTorch memory.
PEAK_FREE_MEMORY = "free-memory-difference"
PEAK_ALLOCATED = "allocated-peak"
PEAK_RULES = (PEAK_FREE_MEMORY, PEAK_ALLOCATED)
# PyTorch's CUDA caching allocator hands out blocks in multiples of 512 bytes (kMinBlockSize in
# c10/cuda/CUDACachingAllocator.cpp): every tensor of the step is counted rounded up to it.
ALLOCATOR_BLOCK_BYTES = 512
# Free-memory-difference rule: memory the caching allocator holds reserved after vLLM's
# profiling step per byte of the step's allocated peak. The step frees and re-allocates
# tensors of a few shapes layer after layer; blocks split from large segments and the
# sampler's differently sized arrays leave cached memory that no tensor uses, and vLLM <= 0.6.3
# reads it as used (free memory before - after). Documented fit (bench/memory_logs.py,
# `fit_constants`): least squares through the origin of the reserved activation memory the
# free-memory-difference rows imply (fraction x total - weights - logged KV - non-PyTorch
# memory) on their allocated peak: Llama-2-7B TP1 on A100 (vllm PR 2031, 7351 blocks) and
# Llama-3.1-70B TP2 on H100 with a 24272-token step (the reference runs, >= 24272 KV tokens).
RESERVED_PER_ALLOCATED = 1.58
# vLLM's fused MoE kernel works on at most this many tokens at a time and sizes its three
# intermediate caches for one such chunk (VLLM_FUSED_MOE_CHUNK_SIZE, default 64 x 1024;
# vllm/envs.py and model_executor/layers/fused_moe/fused_moe.py `fused_experts`, 0.6.x).
FUSED_MOE_CHUNK_TOKENS = 64 * 1024

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
    """The live-tensor estimate of the legacy activation rule (`legacy_activation_bytes`):
    hidden state, residual and norm output (3h), the gate/up output and the activation output
    of the FFN shard, and (`with_qkv`) the QKV output, all in the plan's activation dtype, for
    a forward pass of `budget` tokens. MoE: the tokens routed to this device's experts."""
    ab = DTYPE_BYTES[plan.activation_dtype]
    qkv = (model.num_heads // plan.tp + 2 * kv_heads_per_device(model, plan.tp)) * model.head_dim
    if model.is_moe:
        width = model.moe_intermediate_size * max(model.topk, 1) / max(plan.ep, 1) / plan.ffn_tp
    else:
        width = model.intermediate_size / plan.ffn_tp / plan.ffn_replicas
    ffn = ((2 if model.gated_ffn else 1) + 1) * width
    per_token = (3 * model.hidden_size + (qkv if with_qkv else 0) + ffn) * ab
    return budget * per_token


def legacy_activation_bytes(model: ModelSpec, plan: Plan, budget: int, max_num_seqs: int) -> float:
    """Activation buffers of an engine without vLLM's profiling step (TensorRT-LLM, SGLang):
    LEGACY_ACTIVATION_FACTOR x (`forward_live_bytes` + FP32 logits of `max_num_seqs`
    sequences over the vocabulary shard)."""
    d = plan.devices_per_stage
    logits = max_num_seqs * model.vocab_size / d * 4.0
    return LEGACY_ACTIVATION_FACTOR * (forward_live_bytes(model, plan, budget) + logits)


@dataclass(frozen=True)
class ActivationTensor:
    """One tensor alive at a peak of vLLM's profiling step, on one device."""

    name: str  # what it is
    shape: tuple[float, ...]  # elements per dimension (a routed share may be fractional)
    dtype: str  # apex_fast.dtypes name
    source: str  # where the engine allocates it
    count: float = 1.0  # how many such arrays (a fitted count for the sampler's copies)

    @property
    def bytes(self) -> float:
        """Bytes the caching allocator hands out for it (rounded up to ALLOCATOR_BLOCK_BYTES)."""
        n = 1.0
        for d in self.shape:
            n *= d
        raw = n * DTYPE_BYTES[self.dtype]
        return self.count * math.ceil(raw / ALLOCATOR_BLOCK_BYTES) * ALLOCATOR_BLOCK_BYTES


def stored_activation_dtype(plan: Plan) -> str:
    """Dtype of the activations vLLM keeps between kernels: the plan's activation dtype, but
    at least half. With FP8 W8A8 only each GEMM's input is quantised, into a fresh FP8 copy
    (`ops.scaled_fp8_quant`), and the GEMM writes its output in the model dtype
    (`cutlass_scaled_mm(..., out_dtype=input.dtype)`, quantization/utils/w8a8_utils.py
    `apply_fp8_linear`, vllm 0.6.x); hidden states and residuals stay half."""
    return plan.activation_dtype if DTYPE_BYTES[plan.activation_dtype] >= 2 else "half"


def _quantised_activations(plan: Plan) -> bool:
    return DTYPE_BYTES[plan.activation_dtype] < 2


def profile_step_tensors(
    model: ModelSpec,
    plan: Plan,
    budget: int,
    max_num_seqs: int,
    sampler_copies: float = SAMPLER_LIVE_COPIES,
) -> dict[str, list[ActivationTensor]]:
    """The tensors alive at each candidate peak of vLLM's profiling step on one device: a
    forward pass of `budget` tokens over `max_num_seqs` dummy sequences (V0 model_runner
    `profile_run`, V1 gpu_model_runner `profile_run`), then one sampled token per sequence.

    Phases (vllm 0.6.x model_executor/models/llama.py and layers/):
    - ``attention``: the layer input (still held by the model's layer loop), the residual
      (fused add-RMSNorm works in place), the QKV output, the attention output and the o_proj
      output;
    - ``gate_up GEMM``: layer input, residual, the post-attention hidden state (normed in
      place), its FP8 copy when activations are quantised, and the gate/up output;
    - ``activation``: the same three hidden-size tensors, the gate/up output and the
      SiluAndMul output. vLLM's logged peaks of Llama-3.1-8B (2.07 GiB at 20000 tokens, 2.99
      GiB at 29000, vllm issue 10517) are exactly these tensors (108 KiB per token), so the
      down projection's output does not add to the peak;
    - ``fused MoE`` (MoE models): the three hidden-size tensors and the fused kernel's
      intermediate caches for one chunk of at most FUSED_MOE_CHUNK_TOKENS tokens (top-k
      routed copies of the gate/up and activation outputs of this device's expert shard, and
      the per-copy down outputs of hidden size before they are summed);
    - ``sampler``: the forward tensors are freed; `sampler_copies` FP32 [max_num_seqs, vocab]
      arrays (logits gathered over the whole vocabulary, softmax, log-softmax, sorted values,
      int64 sort indices, cumulative sums; a documented fit, SAMPLER_LIVE_COPIES).
    """
    t = budget
    h = model.hidden_size
    a = stored_activation_dtype(plan)
    hd = model.head_dim
    q = model.num_heads // plan.tp * hd
    kv = kv_heads_per_device(model, plan.tp) * hd
    loop = "model forward: layer loop variable (input of the layer, normed in place)"
    stream = [
        ActivationTensor("layer input", (t, h), a, loop),
        ActivationTensor("residual", (t, h), a, "decoder layer: fused_add_rms_norm in place"),
    ]
    phases: dict[str, list[ActivationTensor]] = {}
    phases["attention"] = stream + [
        ActivationTensor("qkv", (t, q + 2 * kv), a, "QKVParallelLinear output"),
        ActivationTensor("attention output", (t, q), a, "Attention backend output"),
        ActivationTensor("o_proj output", (t, h), a, "RowParallelLinear output"),
    ]
    post = ActivationTensor("post-attention hidden", (t, h), a, "o_proj output, normed in place")
    quant = _quantised_activations(plan)
    gate = 2 if model.gated_ffn else 1
    if model.is_moe:
        m = min(t, FUSED_MOE_CHUNK_TOKENS)
        k = max(model.topk, 1)
        ep = max(plan.ep, 1)
        w = model.moe_intermediate_size / plan.ffn_tp
        src = "fused_moe fused_experts intermediate_cache"
        phases["fused MoE"] = stream + [
            post,
            ActivationTensor("gate/up per routed copy", (m, k / ep, gate * w), a, src + "1"),
            ActivationTensor("activation per routed copy", (m * k / ep, w), a, src + "2"),
            ActivationTensor("down output per routed copy", (m, k / ep, h), a, src + "3"),
        ]
    else:
        w = model.intermediate_size / plan.ffn_tp / plan.ffn_replicas
        gate_up = ActivationTensor("gate/up output", (t, gate * w), a, "MergedColumnParallelLinear")
        gemm_in = []
        if quant:
            gemm_in = [
                ActivationTensor("FP8 copy of the GEMM input", (t, h), "float8", "fp8 quant")
            ]
        phases["gate_up GEMM"] = stream + [post, *gemm_in, gate_up]
        phases["activation"] = stream + [
            post,
            gate_up,
            ActivationTensor("activation output", (t, w), a, "SiluAndMul / activation output"),
        ]
    vocab = model.vocab_size
    phases["sampler"] = [
        ActivationTensor(
            "sampler arrays (logits, probabilities, sorted copies)",
            (max_num_seqs, vocab),
            "float",
            "Sampler: top-p/top-k over the gathered logits",
            count=sampler_copies,
        )
    ]
    return phases


def phase_bytes(phases: dict[str, list[ActivationTensor]]) -> dict[str, float]:
    """Bytes alive at each phase of `profile_step_tensors`."""
    return {k: sum(x.bytes for x in v) for k, v in phases.items()}


def forward_peak_bytes(model: ModelSpec, plan: Plan, budget: int) -> float:
    """Allocated peak of the forward pass alone: the largest phase other than the sampler."""
    got = phase_bytes(profile_step_tensors(model, plan, budget, 0, 0.0))
    return max(v for k, v in got.items() if k != "sampler")


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
    """Activation peak as PyTorch's allocated-bytes peak sees it: the largest phase of the
    profiling step (`profile_step_tensors`)."""
    phases = profile_step_tensors(model, plan, budget, max_num_seqs, sampler_copies)
    return max(phase_bytes(phases).values())


def non_torch_bytes(
    group_devices: int,
    base: float = NON_TORCH_BASE_BYTES,
    group_extra: float = NON_TORCH_GROUP_BYTES,
) -> float:
    """Memory outside PyTorch on one device of a collective group of `group_devices` devices:
    `base`, plus `group_extra` of communicator buffers when the device talks to others."""
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
    reserved_ratio: float = RESERVED_PER_ALLOCATED,
) -> tuple[float, float]:
    """(activation peak, non-PyTorch bytes) per device of vLLM's profiling step under an
    engine's peak rule: the allocated peak of the step's tensors (x `reserved_ratio` when
    the engine reads free memory), plus the memory outside PyTorch. The keyword arguments
    override the fitted constants (fits, tests)."""
    if peak_rule not in PEAK_RULES:
        raise ValueError(f"unknown memory peak rule {peak_rule!r}")
    act = allocated_peak_activation_bytes(model, plan, budget, max_num_seqs, sampler_copies)
    if peak_rule == PEAK_FREE_MEMORY:
        act *= reserved_ratio
    return act, non_torch_bytes(plan.devices_per_stage, base, group_extra)


def engine_memory_terms(
    model: ModelSpec,
    plan: Plan,
    budget: int,
    max_num_seqs: int,
    peak_rule: str,
    fraction_kind: str,
) -> tuple[float, float]:
    """(activation, runtime) bytes per device an engine sets aside before its KV cache: vLLM's
    profiling step (`profiling_terms`) when its knob is gpu_memory_utilization; otherwise the
    legacy rule (`legacy_activation_bytes` + RUNTIME_RESERVE_BYTES), since those engines do
    not run vLLM's profiling step."""
    if fraction_kind == "gpu_memory_utilization":
        return profiling_terms(model, plan, budget, max_num_seqs, peak_rule)
    if peak_rule not in PEAK_RULES:
        raise ValueError(f"unknown memory peak rule {peak_rule!r}")
    return legacy_activation_bytes(model, plan, budget, max_num_seqs), RUNTIME_RESERVE_BYTES


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
    act, runtime = engine_memory_terms(model, plan, budget, max_num_seqs, peak_rule, fraction_kind)
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

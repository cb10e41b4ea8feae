"""TensorRT-LLM with the PyTorch backend and in-flight batching (as of ~1.0).

Sources: the TensorRT-LLM documentation and a ~1.0-era copy of the LLM-API arguments (read
from a code index, not pinned to a release tag):
  ARGS = https://github.com/NVIDIA/TensorRT-LLM/blob/main/tensorrt_llm/llmapi/llm_args.py
         (BaseLlmArgs, TorchLlmArgs, KvCacheConfig, CudaGraphConfig, SchedulerConfig)
  DOCS = https://nvidia.github.io/TensorRT-LLM/  pages:
         torch/scheduler.html, features/paged-attention-ifb-scheduler.html,
         performance/performance-tuning-guide/useful-runtime-flags.html,
         features/long-sequence.html, torch/features/overlap_scheduler.html,
         features/torch_compile_and_piecewise_cuda_graph.html
  ISSUE = https://github.com/NVIDIA/TensorRT-LLM/issues/13957 (PyExecutor host loop)
"""

from __future__ import annotations

from dataclasses import dataclass

from apex_fast.engines.profile import (
    COMMON_FLAGS,
    NO_CHUNKING_FLAG,
    AttentionChoice,
    EagerKernels,
    EngineProfile,
)
from apex_fast.kernels.params import ADMIT_NO_EVICT

_ARGS = "https://github.com/NVIDIA/TensorRT-LLM/blob/main/tensorrt_llm/llmapi/llm_args.py"
_DOCS = "https://nvidia.github.io/TensorRT-LLM/"
_SCHED = _DOCS + "torch/scheduler.html"
_IFB = _DOCS + "features/paged-attention-ifb-scheduler.html"
_FLAGS = _DOCS + "performance/performance-tuning-guide/useful-runtime-flags.html"
_LONG = _DOCS + "features/long-sequence.html"
_OVERLAP = _DOCS + "torch/features/overlap_scheduler.html"
_GRAPHS = _DOCS + "features/torch_compile_and_piecewise_cuda_graph.html"
_ISSUE = "https://github.com/NVIDIA/TensorRT-LLM/issues/13957"
# PyTorch-backend model code, read in the code index at the commits named (not release tags):
_GH = "https://github.com/NVIDIA/TensorRT-LLM/blob/"
_ATTN = _GH + "c6d3bb2aae305e0b5ac1b97b7954dcf87d653322/tensorrt_llm/_torch/modules/attention.py"
_LINEAR = _GH + "ed53795b33fc139493f762a1c6c53f691cf52d38/tensorrt_llm/_torch/modules/linear.py"
_LLAMA = (
    _GH + "012cf9099ed6935c6b42a7b4c91356cbfa81b442/tensorrt_llm/_torch/models/modeling_llama.py"
)
_MLP = _GH + "01503f5535c0379da60bfd282d225626813781ab/tensorrt_llm/_torch/modules/gated_mlp.py"
_KVMEM = _GH + "d8ae02caed59708512e5aa578a09bb09f365bfed/tensorrt_llm/_torch/pyexecutor/_util.py"
_CAPSCHED = (
    _GH + "cf6abc45df6e3470d8c378366896882e1f43e60c/cpp/tensorrt_llm/batch_manager/"
    "capacityScheduler.cpp"
)

# What the PyTorch backend's eager Llama forward launches per layer where it differs from
# vLLM (_LLAMA LlamaAttention: pos_embd_params with fuse_pos_embd, so the TRTLLM attention op
# applies RoPE and writes the KV cache in its QKV-preprocessing kernel; _ATTN Attention.forward:
# with an FP8 o_proj the attention kernel writes its output already quantised (out_scale =
# o_proj.inv_input_scale); _LINEAR FP8QDQLinearMethod.apply: an FP8 checkpoint with static
# input scales quantises with one static_quantize_e4m3_per_tensor kernel, an input already in
# FP8 is not quantised again; _MLP GatedMLP: gate_up -> swiglu -> down_proj, the down_proj
# input quantised by its linear).
TRT_EAGER_KERNELS = EagerKernels(
    rotary=0,
    kv_write=0,
    fp8_quant_per_linear=1,
    fp8_prequantised_linears=1,  # o_proj
    custom_all_reduce=1,  # one torch.ops.trtllm.allreduce call (AUTO strategy)
)

# ARGS `CudaGraphConfig` / `TorchLlmArgs`: CUDA graphs on by default with max batch size 128;
# without padding the captured batch sizes are 1..31, 32, 64 and 128.
DECODE_GRAPH_SIZES = tuple(range(1, 32)) + (32, 64, 128)

TRTLLM = EngineProfile(
    name="trtllm",
    display_name="TensorRT-LLM (PyTorch backend)",
    version="1.0",
    versions_read="~1.0 LLM-API arguments and current documentation",
    # _SCHED, _IFB: each iteration the CapacityScheduler (reserves KV per request) then the
    # MicroBatchScheduler picks context and generation requests under max_batch_size and
    # max_num_tokens; context tokens precede generation tokens in one packed step.
    step_formation="inflight",
    step_formation_chunked="inflight",
    chunked_prefill_default=False,  # ARGS `enable_chunked_prefill` False; _LONG: opt-in
    chunked_auto_above_max_model_len=None,  # ARGS: opt-in only
    chunked_prefill_can_be_disabled=True,  # ARGS `enable_chunked_prefill`
    # _FLAGS: GUARANTEED_NO_EVICT (default) never pauses a started request; MAX_UTILIZATION
    # packs more and may pause requests when KV runs out.
    preemption="none under the default GUARANTEED_NO_EVICT policy",
    admission="a request starts only if KV for its prompt and maximum output is reserved",
    # cpp/tensorrt_llm/batch_manager/capacityScheduler.cpp GuaranteedNoEvictScheduler and
    # kvCacheManager.cpp getRemainingBlocksToCompletion (docs/engines.md)
    admission_policy=ADMIT_NO_EVICT,
    budget_chunked_by_memory=((0.0, 8192),),  # ARGS `max_num_tokens` 8192
    budget_unchunked_floor=8192,  # ARGS `max_num_tokens` 8192 (no max_model_len rule)
    budget_unchunked_uses_max_model_len=False,
    max_num_seqs_default=2048,  # ARGS `max_batch_size` 2048
    device_defaults=(),  # ARGS defaults do not depend on the GPU
    memory_fraction_kind="kv_cache_free_gpu_mem_fraction",
    # ARGS `KvCacheConfig.free_gpu_memory_fraction` 0.9 of the memory left after weights and
    # activations (performance overview: 0.95 "in many cases" for trtllm-bench)
    memory_fraction_by_tp=((1, 0.90),),
    block_size_default=32,  # ARGS `KvCacheConfig.tokens_per_block` 32
    prefix_caching_default=True,  # ARGS `KvCacheConfig.enable_block_reuse` True
    cuda_graphs_default=True,  # ARGS `TorchLlmArgs.cuda_graph_config` set by default
    cuda_graph_decode_sizes=DECODE_GRAPH_SIZES,
    cuda_graph_max_seq_len=None,  # _GRAPHS: keyed by batch size only
    # _GRAPHS: graphs cover generation-only batches; context/mixed steps run eagerly unless
    # piecewise graphs are enabled through torch_compile_config (None by default).
    graphs_prefill=False,
    graphed_prefill_max_tokens=0,
    # _OVERLAP: step n+1 is launched before step n's host work (stop checks, responses,
    # scheduling) ends, at the cost of one extra decode step per request.
    async_output_default=True,
    overlap_scheduler_default=True,  # ARGS `disable_overlap_scheduler` False
    multi_step_supported=False,  # no multi-step scheduling option in ARGS
    multi_step_with_chunked_prefill=False,  # no multi-step at all
    # _ISSUE: PyExecutor's loop does scheduling, dispatch, sampler post-processing and
    # request handling on one Python thread.
    separate_api_process=False,
    # ARGS `attn_backend` 'TRTLLM'; `sync_quant_config_with_kv_cache_config_dtype`: an FP8 KV
    # cache sets kv_cache_quant_algo=FP8 for the same backend.
    attention_backend=(
        ("half", "TRTLLM attention backend"),
        ("float8", "TRTLLM attention backend with FP8 KV cache"),
    ),
    # ARGS `attn_backend` 'TRTLLM' on every GPU and KV dtype: TensorRT-LLM's own context FMHA
    # and XQA / masked-MHA generation kernels, no xFormers fallback for an FP8 KV cache.
    attention_choice=AttentionChoice(by_kv_dtype=(("half", "trtllm"),), pre_ampere="trtllm"),
    eager_kernels=TRT_EAGER_KERNELS,
    # ARGS `allreduce_strategy` 'AUTO' picks TensorRT-LLM's own one-/two-shot NVLink kernels
    # for small messages; 'NCCL' turns them off.
    custom_all_reduce_default=True,
    flags=COMMON_FLAGS | {NO_CHUNKING_FLAG},
    flag_spelling=(
        ("--enforce-eager", "cuda_graph_config: null"),
        ("--disable-custom-all-reduce", "allreduce_strategy: NCCL"),
        ("--max-model-len", "--max_seq_len"),
        ("--enable-prefix-caching", "kv_cache_config.enable_block_reuse"),
        ("--chunked-prefill", "enable_chunked_prefill: true"),
        ("--no-chunked-prefill", "enable_chunked_prefill: false"),
        ("--max-num-seqs", "--max_batch_size"),
        ("--max-num-batched-tokens", "--max_num_tokens"),
        ("--block-size", "kv_cache_config.tokens_per_block"),
        ("--gpu-memory-utilization", "--kv_cache_free_gpu_memory_fraction"),
    ),
    sources=(
        _ARGS,
        _SCHED,
        _IFB,
        _FLAGS,
        _LONG,
        _OVERLAP,
        _GRAPHS,
        _ISSUE,
        _ATTN,
        _LINEAR,
        _LLAMA,
        _MLP,
        _KVMEM,
        _CAPSCHED,
    ),
    not_modelled=(
        "GUARANTEED_NO_EVICT: the prefix-reuse skip of a pending request (beneficialToSkip) "
        "and the micro-batch scheduler's stop at the first context request over the token "
        "budget (admission and reservation themselves are modelled)",
        "without chunked context a prompt is never split; the kernel's mixed mode may split "
        "one when decodes already use part of the budget",
        "kv_cache_free_gpu_mem_fraction is applied to the memory left after this tool's "
        "weights, activation peak and runtime reserve (plans/memory.py kv_pool_bytes), not to "
        "a measured profiling peak",
        "the GPU time of FP8 activation quantisation is vLLM's (max-reduction + quantisation "
        "pass per linear), not TensorRT-LLM's single static-scale pass",
        "KV block reuse: simulated with vLLM V1's block-pool rules (hashed full prompt "
        "blocks, LRU eviction), not TensorRT-LLM's own priority-based eviction",
        "the TensorRT (engine-build) backend, NIM and Triton front-ends (rows served by "
        "Triton before 1.0 take that backend's KV-reuse, chunking and KV-fraction defaults, "
        "TRITON_BACKEND_014; not its lack of CUDA graphs and of host overlap)",
    ),
    kernel_mode_note=(
        "kernel chunked-mixed mode with a max_num_tokens budget (8192): context and "
        "generation requests share a step, generation first (the in-flight batching rule)."
    ),
)


# --- The TensorRT engine-build backend behind Triton (releases before 1.0) ----------------------
# The v0.14 "Online Serving Measurements" of the performance overview ran TensorRT engines
# through Triton's tensorrtllm_backend, not the PyTorch backend the profile above describes.
# What that backend does when its model configuration leaves a parameter unset, read at the tag:
_TRITON_014 = (
    "https://github.com/triton-inference-server/tensorrtllm_backend/blob/v0.14.0/"
    "inflight_batcher_llm/src/model_instance_state.cc"
)
# ExtendedRuntimePerfKnobConfig(multiBlockMode = true, enableContextFMHAFP32Acc = false,
# cudaGraphMode = false, ...) and ExecutorConfig; read in a later copy of the file (not pinned),
# the backend at v0.14.0 passes only the first two arguments
_EXEC_H = _GH + "main/cpp/include/tensorrt_llm/executor/executor.h"
# Executor::Impl::executionLoop: forwardSync (wait for step n) -> populateNewResponses ->
# fetchNewRequests -> forwardAsync (schedule and enqueue step n+1); read in a later copy
_EXEC_LOOP = _GH + "main/cpp/tensorrt_llm/executor/executorImpl.cpp"


@dataclass(frozen=True)
class TritonBackendDefaults:
    """Serving defaults of the TensorRT engine-build backend behind Triton at one release."""

    release: tuple[int, int, int]  # the tensorrtllm_backend tag read
    kv_block_reuse: bool  # `enable_kv_cache_reuse` unset
    chunked_context: bool  # `enable_chunked_context` unset
    scheduler_policy: str  # `batch_scheduler_policy` unset
    kv_cache_free_gpu_mem_fraction: float  # `kv_cache_free_gpu_mem_fraction` unset
    cuda_graphs: bool  # executor cudaGraphMode (not a backend parameter at this tag)
    host_overlap: bool  # the executor schedules step n+1 only after step n has synced
    sources: tuple[str, ...]


TRITON_BACKEND_014 = TritonBackendDefaults(
    release=(0, 14, 0),
    kv_block_reuse=False,  # _TRITON_014 getKvCacheConfigFromParams: "will be set to false"
    chunked_context=False,  # _TRITON_014 getExecutorConfigFromParams: "will be set to false"
    scheduler_policy="guaranteed_no_evict",  # _TRITON_014 getSchedulerConfigFromParams
    kv_cache_free_gpu_mem_fraction=0.9,  # _TRITON_014: "will use default value of 0.9"
    cuda_graphs=False,  # _EXEC_H ExtendedRuntimePerfKnobConfig cudaGraphMode = false
    host_overlap=False,  # _EXEC_LOOP executionLoop order
    sources=(_TRITON_014, _EXEC_H, _EXEC_LOOP),
)

# The first release whose rows this tool replays with the PyTorch-backend profile as is;
# TensorRT-LLM made the PyTorch backend the default LLM-API backend at 1.0.
PYTORCH_BACKEND_FIRST = (1, 0, 0)


def triton_backend_defaults(engine_version: str, served_by: str) -> TritonBackendDefaults | None:
    """The Triton backend defaults of a published row: its version string (e.g. "0.14.0") and
    what served it (the row's `engine_flags`, e.g. "Triton tensorrtllm_backend (TensorRT
    engine)"). None for rows of the PyTorch backend, NIM containers or other front ends."""
    if "triton" not in served_by.lower() or "nim" in engine_version.lower():
        return None
    parts: list[int] = []
    for p in engine_version.split(" ")[0].split(".")[:3]:
        if not p.isdigit():
            break
        parts.append(int(p))
    if not parts or tuple(parts + [0] * (3 - len(parts))) >= PYTORCH_BACKEND_FIRST:
        return None
    return TRITON_BACKEND_014

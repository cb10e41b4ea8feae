"""vLLM V1 engine (as of 0.8.4, where V1 is the default).

Sources are the files of the vllm 0.8.4 release (PyPI wheel, same paths as the v0.8.4 tag):
  A   = https://github.com/vllm-project/vllm/blob/v0.8.4/vllm/engine/arg_utils.py
  C   = https://github.com/vllm-project/vllm/blob/v0.8.4/vllm/config.py
  SCH = https://github.com/vllm-project/vllm/blob/v0.8.4/vllm/v1/core/sched/scheduler.py
  CU  = https://github.com/vllm-project/vllm/blob/v0.8.4/vllm/platforms/cuda.py
  BLOG = https://blog.vllm.ai/2025/01/27/v1-alpha-release.html (vLLM V1 alpha)
"""

from __future__ import annotations

from apex_fast.engines.profile import (
    COMMON_FLAGS,
    AttentionChoice,
    EngineProfile,
)
from apex_fast.engines.vllm_06 import V0_EAGER_KERNELS
from apex_fast.kernels.params import ADMIT_PER_CHUNK

_TAG = "https://github.com/vllm-project/vllm/blob/v0.8.4/vllm/"
_A = _TAG + "engine/arg_utils.py"
_C = _TAG + "config.py"
_SCH = _TAG + "v1/core/sched/scheduler.py"
_CU = _TAG + "platforms/cuda.py"
_BLOG = "https://blog.vllm.ai/2025/01/27/v1-alpha-release.html"
# Public measurements of the time a request spends in V1's front end (API-server process).
_PREPROC_PR = "https://github.com/vllm-project/vllm/pull/21139"
_SCALEOUT_PR = "https://github.com/vllm-project/vllm/pull/17546"

# Seconds from a client sending a request to V1's engine core being able to schedule it, plus
# the hand-back of its first token: the API-server process parses the HTTP request, renders the
# chat template and tokenises (entrypoints/openai/serving_chat.py, serving_engine.py: one
# tokeniser worker thread, vLLM issue #25301), builds the EngineCoreRequest
# (v1/engine/processor.py) and sends it to the engine-core process over ZMQ
# (v1/engine/core_client.py); the first token comes back the same way and is detokenised
# (v1/engine/output_processor.py) and streamed. Two public figures agree on ~13 ms:
#   - _PREPROC_PR (V1, July 2025): a counter of a request's preprocessing time, "compute done
#     out of engine that could affect prefill and TTFT", printed 14.3, 12.9 and 12.4 ms at a
#     batch of 96 ("almost always >12"); their mean, 13.2 ms, is taken.
#   - _SCALEOUT_PR (V1, May 2025): one API server in front of two data-parallel engines on
#     2x A100 (Llama-3.2-1B, ShareGPT offered at 120 req/s) completed 10000 requests in 130.74 s,
#     76.5 req/s: 13.1 ms of API-server time per request (derived: 1 / 76.5, on the reading,
#     the PR's subject, that the single API server limited that run).
# A host-dependent figure (CPU speed, prompt length, endpoint); applied as a latency per
# request, not as a shared server (EngineProfile.request_frontend_s).
V1_REQUEST_FRONTEND_S = 13.2e-3

# C `_set_cudagraph_sizes` (V1 branch): [1, 2, 4] + range(8, 513, 8), kept <= the token
# budget. V1 graphs are piecewise and indexed by tokens in the step, not by sequences.
PIECEWISE_GRAPH_SIZES = (1, 2, 4) + tuple(range(8, 513, 8))

VLLM_V1 = EngineProfile(
    name="vllm-v1",
    display_name="vLLM V1 engine",
    version="0.8.4",
    versions_read="0.8.0, 0.8.4, 0.10.2, 0.11.0-0.15.0",
    # SCH `schedule`: one token budget per step, spent on running requests first (decodes,
    # unfinished prompt chunks), then on waiting requests; prompts are cut to the budget.
    step_formation="chunked-mixed",
    step_formation_chunked="chunked-mixed",
    chunked_prefill_default=True,  # A `_set_default_args_v1`: "V1 always uses chunked prefills"
    chunked_auto_above_max_model_len=None,  # always on, no length rule
    chunked_prefill_can_be_disabled=False,  # A `_set_default_args_v1` forces it on
    # SCH `schedule`: when a running request cannot get a KV block, the last running request
    # (lowest priority under priority scheduling) is preempted and recomputed later.
    preemption="recompute; victim = last running request",
    admission="FCFS after all running requests; needs the KV blocks of the scheduled tokens",
    # SCH Scheduler.schedule and v1/core/kv_cache_manager.py allocate_slots (v0.8.4 ..
    # v0.11.0): blocks of the scheduled chunk only, no watermark; no admission in a step
    # that preempted
    admission_policy=ADMIT_PER_CHUNK,
    # A `_set_default_args_v1`: OpenAI server 2048 tokens (LLM class 8192) on GPUs other than
    # H100/H200 ...
    budget_chunked_by_memory=((0.0, 2048),),
    budget_unchunked_floor=2048,  # unused: V1 never runs unchunked (A)
    budget_unchunked_uses_max_model_len=False,
    max_num_seqs_default=256,  # A `_set_default_args_v1`: 256 on GPUs other than H100/H200
    # ... and, on a device whose name contains "h100" or "h200", 8192 tokens (LLM class
    # 16384) and 1024 sequences (A `_set_default_args_v1`).
    device_defaults=(("H100", 8192, 1024), ("H200", 8192, 1024)),
    memory_fraction_kind="gpu_memory_utilization",
    memory_fraction_by_tp=((1, 0.90),),  # A `EngineArgs.gpu_memory_utilization`
    block_size_default=16,  # C `CacheConfig` / CU: 16 for FlashAttention
    prefix_caching_default=True,  # A `_set_default_args_v1`: "V1 enables prefix caching"
    cuda_graphs_default=True,  # A `enforce_eager` False
    cuda_graph_decode_sizes=PIECEWISE_GRAPH_SIZES,
    cuda_graph_max_seq_len=None,  # piecewise graphs do not depend on the sequence length
    # BLOG, C: torch.compile splits the model at attention; every other op of a step with at
    # most 512 tokens (prefill, decode or mixed) replays a piecewise graph, attention eager.
    graphs_prefill=True,
    graphed_prefill_max_tokens=512,
    # BLOG: detokenisation and output objects live in the API-server process, overlapped
    # with the EngineCore busy loop; the core itself runs schedule -> execute -> update in
    # order (async scheduling became the default only in 0.14.0).
    async_output_default=False,
    overlap_scheduler_default=False,
    # A `_is_v1_supported_oracle`: --num-scheduler-steps != 1 is "not supported by the V1
    # Engine" (0.8 falls back to V0, or fails with VLLM_USE_V1=1).
    multi_step_supported=False,
    multi_step_with_chunked_prefill=False,  # no multi-step at all
    separate_api_process=True,  # BLOG: API server <-> EngineCore process over ZMQ
    # CU `get_attn_backend_cls` (use_v1): FlashAttention (FA3 on Hopper, FA2 otherwise).
    # A `_is_v1_supported_oracle`: an FP8 KV cache stays on V1 only where FlashAttention
    # supports FP8 (FA3, Hopper); elsewhere 0.8.4 falls back to the V0 engine.
    attention_backend=(
        ("half", "FLASH_ATTN_VLLM_V1 (FlashAttention-3 on Hopper, FlashAttention-2 otherwise)"),
        ("float8", "FLASH_ATTN_VLLM_V1 with FP8 KV (FA3, Hopper only; else V0 fallback)"),
    ),
    # CU `get_attn_backend_cls`: FlashAttention on every GPU V1 runs on; A
    # `_is_v1_supported_oracle`: an FP8 KV cache off Hopper, or a GPU below SM 8.0, falls back
    # to the V0 engine, whose selector then picks xFormers + PagedAttention.
    attention_choice=AttentionChoice(
        by_kv_dtype=(("half", "flash-attn"), ("float8", "xformers"), ("int8", "xformers")),
        pre_ampere="xformers",
        hopper=(("float8", "flash-attn"),),
    ),
    # model code, rotary, KV write (reshape_and_cache_flash inside the attention op) and
    # scaled_fp8_quant are the V0 ones in 0.8.4 (model_executor/models/llama.py,
    # _custom_ops.py); under piecewise graphs only attention and its KV write are launched.
    eager_kernels=V0_EAGER_KERNELS,
    custom_all_reduce_default=True,  # A `disable_custom_all_reduce` False
    flags=COMMON_FLAGS,  # A: no --num-scheduler-steps, and chunked prefill cannot be turned off
    flag_spelling=(("--chunked-prefill", "--enable-chunked-prefill"),),
    sources=(_A, _C, _SCH, _CU, _BLOG),  # measurements: V1_REQUEST_FRONTEND_S above
    not_modelled=(
        "prefix caching of generated tokens (only full prompt blocks are cached)",
        "priority scheduling, speculative decoding, KV-transfer connectors",
        "the FP8-KV fallback to the V0 engine on GPUs without FlashAttention-3",
        "per-chunk KV allocation runs with one block pool for all layers (V1 allocates per "
        "KV-cache group for sliding-window models)",
        # vLLM issue #25301 (tokenisation on one worker thread of the API server); published
        # chat-endpoint runs of 0.11.0 show the cost (docs/validation.md, vLLM V1 dense)
        "the API-server process as a shared server (its per-request time is a fixed latency "
        "here; requests do not queue for it, and its per-token streaming work is not charged): "
        "the throughput of bursts of short requests is optimistic",
    ),
    # SCH `schedule`: a preempted request is freed with `kv_cache_manager.free` and recomputed
    # from `num_computed_tokens = 0`; with prefix caching on (the V1 default) `free` returns its
    # blocks to the free queue last block first with their hashes kept (v1/core/block_pool.py,
    # kv_cache_manager.py), and `get_computed_blocks` at readmission finds those not reused
    # since. Distinct prompts therefore still hit their own blocks after a preemption.
    hashless_prompts_keep_own_blocks=True,
    kernel_mode_note=(
        "kernel chunked-mixed mode: running requests first, then waiting prompts cut to one "
        "token budget (the V1 rule). Defaults follow vLLM 0.8.4's OpenAI server: 8192 tokens "
        "and 1024 sequences on H100/H200, 2048 tokens and 256 sequences elsewhere."
    ),
    # v1/worker/gpu_worker.py `determine_available_memory` (0.8.4): KV bytes = total x
    # gpu_memory_utilization - (torch.cuda.memory_stats()["allocated_bytes.all.peak"] of the
    # profiling step + memory allocated outside PyTorch); the same rule as V0 from 0.6.4
    # (vllm PR 9352, worker.py `determine_num_available_blocks`).
    memory_peak_rule="allocated-peak",
    request_frontend_s=V1_REQUEST_FRONTEND_S,
    # model_executor/layers/quantization/utils/fp8_utils.py `apply_w8a8_block_fp8_linear`
    # (0.8.4): CUTLASS block-FP8 GEMM (ops.cutlass_scaled_mm) on Hopper for weights whose
    # dims are multiples of 128; layers/fused_moe/fused_moe.py: the Triton fused-MoE kernel
    # for block-FP8 experts (DeepGEMM MoE only from 0.9 behind VLLM_USE_DEEP_GEMM);
    # layers/fused_moe/layer.py + fused_moe.py `moe_align_block_size`: expert parallelism
    # through an expert map (global expert ids mapped to -1 off the rank, fused_moe_kernel
    # writes zeros for those row blocks) and the tensor-parallel all-reduce of the output
    block_fp8_dense_kernel="cutlass",
    fused_moe_kernel="triton",
    moe_ep_expert_map=True,
)

"""vLLM 0.6 (V0 engine), the default profile: the behaviour the simulation was calibrated on.

Sources are the files of the vllm 0.6.0 release (PyPI package, same paths as the v0.6.0 tag):
  S  = https://github.com/vllm-project/vllm/blob/v0.6.0/vllm/core/scheduler.py
  A  = https://github.com/vllm-project/vllm/blob/v0.6.0/vllm/engine/arg_utils.py
  C  = https://github.com/vllm-project/vllm/blob/v0.6.0/vllm/config.py
  MR = https://github.com/vllm-project/vllm/blob/v0.6.0/vllm/worker/model_runner.py
  SEL= https://github.com/vllm-project/vllm/blob/v0.6.0/vllm/attention/selector.py
  BLOG = https://blog.vllm.ai/2024/09/05/perf-update.html (vLLM v0.6.0 performance update)
"""

from __future__ import annotations

from apex_fast.engines.profile import KNOWN_FLAGS, AttentionChoice, EagerKernels, EngineProfile
from apex_fast.kernels.params import ADMIT_WHOLE_PROMPT

_TAG = "https://github.com/vllm-project/vllm/blob/v0.6.0/vllm/"
_S = _TAG + "core/scheduler.py"
_A = _TAG + "engine/arg_utils.py"
_C = _TAG + "config.py"
_MR = _TAG + "worker/model_runner.py"
_SEL = _TAG + "attention/selector.py"
_BLOG = "https://blog.vllm.ai/2024/09/05/perf-update.html"

# SEL `which_attn_to_use`: FLASH_ATTN unless the model dtype is not fp16/bf16, the KV cache is
# FP8 (fp8, fp8_e4m3, fp8_e5m2) or the GPU is older than SM 8.0; then XFORMERS for prefill and
# vLLM's PagedAttention kernel for decode.
V0_ATTENTION = AttentionChoice(
    by_kv_dtype=(
        ("half", "flash-attn"),
        ("float8", "xformers"),
        ("int8", "xformers"),
        ("float", "xformers"),
    ),
    pre_ampere="xformers",
)

# What vLLM 0.6's eager forward launches per decoder layer beyond the shared kernels (read in
# vllm 0.6.0 model_executor/models/llama.py LlamaAttention.forward, layers/rotary_embedding.py,
# attention/backends/flash_attn.py and xformers.py, _custom_ops.py scaled_fp8_quant,
# csrc/quantization/fp8/common.cu, distributed/device_communicators/custom_all_reduce.py).
V0_EAGER_KERNELS = EagerKernels(
    rotary=1,  # rotary_embedding custom op
    kv_write=1,  # reshape_and_cache(_flash)
    # W8A8 FP8 with dynamic activation scales: torch.zeros for the scale, then
    # dynamic_scaled_fp8_quant launches segmented_max_reduction and scaled_fp8_quant_kernel
    fp8_quant_per_linear=3,
    fp8_prequantised_linears=0,  # every linear quantises its own input
    # eager custom all-reduce copies the input into its registered buffer, then reduces
    # (custom_all_reduce.py all_reduce_unreg)
    custom_all_reduce=2,
)

# CUDA-graph batch sizes 0.6.0 captures with the default max_num_seqs 256: [1, 2, 4] and
# multiples of 8 up to the padded max_num_seqs (MR: _BATCH_SIZES_TO_CAPTURE, capture_model).
DECODE_GRAPH_SIZES_256 = (1, 2, 4) + tuple(range(8, 257, 8))

VLLM_06 = EngineProfile(
    name="vllm-0.6",
    display_name="vLLM 0.6 (V0 engine)",
    version="0.6.0",
    versions_read="0.6.0, 0.6.3",
    # S `_schedule_default`: prefills first (FCFS while budget, max_num_seqs and KV blocks
    # last); a step that scheduled any prefill runs no decodes.
    step_formation="prefill-first",
    # S `_schedule_chunked_prefill`: running queue first (decodes, partial prefills), then
    # swapped, then new prompts cut to min(remaining prompt, remaining budget).
    step_formation_chunked="chunked-mixed",
    # A `create_engine_config`: chunked prefill is off unless turned on ...
    chunked_prefill_default=False,
    # ... or max_model_len > 32768 on CUDA (since 0.5.3; not with sliding window, spec
    # decode, LoRA, prompt adapters, prefix caching).
    chunked_auto_above_max_model_len=32768,
    chunked_prefill_can_be_disabled=True,  # A: --enable-chunked-prefill False
    # S `_schedule_running`/`_preempt`: the last request of the running deque is preempted;
    # RECOMPUTE for single-sequence groups (KV freed, prompt + output re-prefilled later),
    # SWAP for beam search / n > 1.
    preemption="recompute; victim = last running request (swap only for beam search / n>1)",
    # block_manager_v1/v2 `can_allocate`: admit only if free - needed blocks >= 1% of all
    # (watermark 0.01); no new prefills while any request is swapped out (S).
    admission="FCFS; needs its prompt's KV blocks above a 1% free-block watermark",
    admission_policy=ADMIT_WHOLE_PROMPT,  # block_manager_v1/v2 can_allocate (whole prompt)
    # C `SchedulerConfig`: max_num_batched_tokens 512 with chunked prefill (comment: ITL/TTFT
    # balance on A100), whatever the GPU.
    budget_chunked_by_memory=((0.0, 512),),
    # C `SchedulerConfig`: without chunking max(max_model_len, 2048).
    budget_unchunked_floor=2048,
    budget_unchunked_uses_max_model_len=True,
    max_num_seqs_default=256,  # A `EngineArgs.max_num_seqs`
    device_defaults=(),  # no per-GPU defaults in V0
    memory_fraction_kind="gpu_memory_utilization",
    memory_fraction_by_tp=((1, 0.90),),  # A `EngineArgs.gpu_memory_utilization`
    block_size_default=16,  # A `EngineArgs.block_size`
    prefix_caching_default=False,  # A `EngineArgs.enable_prefix_caching`
    cuda_graphs_default=True,  # A `enforce_eager` False
    cuda_graph_decode_sizes=DECODE_GRAPH_SIZES_256,  # MR `_BATCH_SIZES_TO_CAPTURE`
    cuda_graph_max_seq_len=8192,  # A `max_seq_len_to_capture`; MR `_use_captured_graph`
    # MR `_use_captured_graph`: only decode-only batches replay a graph; prefill and mixed
    # chunked-prefill steps run eagerly.
    graphs_prefill=False,
    graphed_prefill_max_tokens=0,
    # C `verify_async_output_proc`: on by default (off for PP>1, enforce_eager, spec decode);
    # step n's output processing runs inside step n+1 (BLOG: -8.7% TPOT on 70B/4xH100).
    async_output_default=True,
    overlap_scheduler_default=False,  # the scheduler itself runs between steps (S)
    # A `num_scheduler_steps` (default 1): N > 1 schedules once per N decode steps.
    multi_step_supported=True,
    # A: 0.6.0 rejects multi-step with chunked prefill (combined from PR #8804, 0.6.3).
    multi_step_with_chunked_prefill=False,
    # BLOG / PR #6883: the OpenAI server runs in its own process, connected over ZMQ.
    separate_api_process=True,
    # SEL `which_attn_to_use`: FLASH_ATTN (vllm_flash_attn, FA2) by default; an FP8 KV cache
    # falls back to XFORMERS (prefill) + vLLM PagedAttention (decode).
    attention_backend=(
        ("float", "XFORMERS + PagedAttention decode (dtype not fp16/bf16)"),
        ("half", "FLASH_ATTN (vllm_flash_attn, FlashAttention-2)"),
        ("float8", "XFORMERS prefill + PagedAttention decode (FP8 KV cache)"),
    ),
    attention_choice=V0_ATTENTION,
    eager_kernels=V0_EAGER_KERNELS,
    custom_all_reduce_default=True,  # A `disable_custom_all_reduce` False
    # every setting of this tool, including --disable-frontend-multiprocessing (API server in
    # the engine's process; the process split is 0.5.4+) and --num-scheduler-steps (A)
    flags=KNOWN_FLAGS,
    flag_spelling=(
        ("--chunked-prefill", "--enable-chunked-prefill"),
        ("--no-chunked-prefill", "--enable-chunked-prefill False"),
    ),
    sources=(_S, _A, _C, _MR, _SEL, _BLOG),
    not_modelled=(
        "swap preemption (beam search / n>1) and the no-prefill-while-swapped rule",
        "--scheduler-delay-factor",
        "multi-step scheduling's per-step output streaming of 0.6.3 "
        "(--multi-step-stream-outputs; the windows, lookahead KV and window-end outputs of "
        "0.6.0 are simulated)",
        "prefix caching with V0's own evictor (by last access time): the cache follows vLLM "
        "V1's block pool (hashed full prompt blocks, LRU free queue)",
    ),
    kernel_mode_note=(
        "chunked prefill off -> kernel prefill-first mode (exact rule); on -> chunked-mixed "
        "mode (exact rule). Without flags this tool keeps its calibrated defaults: chunked "
        "prefill on with a 2048-token budget (vLLM 0.6.0 itself: 512 tokens when chunking)."
    ),
)

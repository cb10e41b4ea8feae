"""SGLang runtime (as of 0.4.6.post5).

Sources are the files of the sglang 0.4.6.post5 release (PyPI package; repository paths
python/sglang/srt/... at tag v0.4.6.post5):
  SA  = .../srt/server_args.py                  (defaults set in __post_init__)
  SCH = .../srt/managers/scheduler.py           (event loop, batch selection)
  SP  = .../srt/managers/schedule_policy.py     (PrefillAdder)
  SB  = .../srt/managers/schedule_batch.py      (retract_decode)
  CGR = .../srt/model_executor/cuda_graph_runner.py
  MR  = .../srt/model_executor/model_runner.py  (attention backend choice)
  BLOG = https://lmsys.org/blog/2024-12-04-sglang-v0-4/ (zero-overhead batch scheduler)
"""

from __future__ import annotations

from apex_fast.engines.profile import COMMON_FLAGS, NO_CHUNKING_FLAG, AttentionChoice, EngineProfile
from apex_fast.engines.vllm_06 import V0_EAGER_KERNELS
from apex_fast.kernels.params import ADMIT_TOKEN_RATIO

_TAG = "https://github.com/sgl-project/sglang/blob/v0.4.6.post5/python/sglang/srt/"
_SA = _TAG + "server_args.py"
_SCH = _TAG + "managers/scheduler.py"
_SP = _TAG + "managers/schedule_policy.py"
_SB = _TAG + "managers/schedule_batch.py"
_CGR = _TAG + "model_executor/cuda_graph_runner.py"
_MR = _TAG + "model_executor/model_runner.py"
_BLOG = "https://lmsys.org/blog/2024-12-04-sglang-v0-4/"
_SA05 = "https://github.com/sgl-project/sglang/blob/v0.5.6/python/sglang/srt/server_args.py"

# SGLang 0.5.x (read in the 0.5.3.post3 and 0.5.6 packages, server_args.py
# `_handle_gpu_memory_settings`) derives mem_fraction_static from the GPU's memory instead of
# 0.4.6's table by TP size: chunked_prefill_size and cuda_graph_max_bs by memory (MiB, as
# nvidia-smi reports it) and TP, then reserved = 512 + max(chunk, 2048) x 1.5 + graph_max_bs x 2
# + tp x pp / 8 x 1024 MiB (at least 10240 MiB above 60 GiB) and fraction = round((memory -
# reserved) / memory, 3). Used to replay published rows of SGLang >= 0.5.3 (validation).
SGLANG_05_FIRST = (0, 5, 3)  # the first release read with this rule (0.4.6.post5 has the table)
# (memory below MiB, chunked_prefill_size, cuda_graph_max_bs below TP 4, from TP 4), CUDA GPUs
_SGLANG_05_BY_MEMORY = (
    (20 * 1024, 2048, 8, 8),
    (35 * 1024, 2048, 24, 80),  # 0.5.3.post3: 16 below TP 4
    (60 * 1024, 4096, 32, 160),
    (90 * 1024, 8192, 256, 512),
    (160 * 1024, 8192, 256, 512),
    (float("inf"), 16384, 512, 512),
)


def mem_fraction_static_05(gpu_mem_mib: float, tp: int, pp: int = 1) -> float:
    """SGLang 0.5.x's default mem_fraction_static for a GPU of `gpu_mem_mib` MiB at TP `tp`
    and PP `pp` (no DP attention, no speculative decoding, no piecewise graphs)."""
    _, chunk, graph_small_tp, graph_large_tp = next(
        row for row in _SGLANG_05_BY_MEMORY if gpu_mem_mib < row[0]
    )
    graph_bs = graph_small_tp if tp < 4 else graph_large_tp
    reserved = 512 + max(chunk, 2048) * 1.5 + graph_bs * 2 + tp * pp / 8 * 1024
    if gpu_mem_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return round((gpu_mem_mib - reserved) / gpu_mem_mib, 3)


# CGR `get_batch_sizes_to_capture` (0.4.6.post5): [1, 2, 4, 8] and multiples of 8 from 16 to
# 160; GPUs with more memory (the threshold is 80, 90 or 96 GiB depending on the release) also
# capture 168..256.
DECODE_GRAPH_SIZES = (1, 2, 4, 8) + tuple(range(16, 161, 8))

SGLANG = EngineProfile(
    name="sglang",
    display_name="SGLang",
    version="0.4.6.post5",
    versions_read="0.4.0, 0.4.3, 0.4.4, 0.4.5, 0.4.6.post5, 0.4.10.post2",
    # SCH `get_next_batch_to_run`: merge the last prefill batch into the running batch, try a
    # new prefill (extend) batch first, decode only if none forms; enable_mixed_chunk is
    # False by default (SA), so a step is prefill-only or decode-only.
    step_formation="prefill-first-chunked",
    step_formation_chunked="prefill-first-chunked",
    chunked_prefill_default=True,  # SA: chunked_prefill_size is set (8192 or 2048) unless -1
    chunked_auto_above_max_model_len=None,  # SA: no length rule
    chunked_prefill_can_be_disabled=True,  # SA: --chunked-prefill-size -1
    # SB `check_decode_mem` / `retract_decode`, SCH `update_running_batch`: when a decode step
    # cannot get memory, the requests with the fewest output tokens (ties: longest input) are
    # retracted until 20 tokens per remaining request are free, and recomputed later (back of
    # the queue); new_token_ratio = min(1, (decoded + 20 x n) / sum max_new) of those left.
    preemption="retract fewest-output requests, recompute; admission ratio re-estimated",
    # SP `PrefillAdder.add_one_req`, SCH `get_new_batch_prefill`: admit while extend_len +
    # min(max_new, 4096) < free (+ evictable) tokens - the running requests' min(max_new -
    # generated, 4096) x new_token_ratio - the requests of this prefill batch (extend +
    # min(max_new, 4096)); new_token_ratio starts at 0.7, decays by 0.602/600 per decode step
    # to 0.098 (global_config.py), is reset when idle; after a NO_TOKEN no prefill is tried
    # until a running request leaves (batch_is_full). Kernel: ADMIT_TOKEN_RATIO.
    admission="FCFS (default policy from 0.4.3.post4); memory reserve by new_token_ratio",
    admission_policy=ADMIT_TOKEN_RATIO,
    # SA `__post_init__`: chunked_prefill_size 2048 if GPU memory < 25_000 MiB (as nvidia-smi
    # reports it), else 8192.
    budget_chunked_by_memory=((25_000 / 1024, 8192), (0.0, 2048)),
    # with --chunked-prefill-size -1 a prefill step is bounded by max_prefill_tokens 16384
    # (SA `max_prefill_tokens`), the first request always admitted whole (SP).
    budget_unchunked_floor=16384,
    budget_unchunked_uses_max_model_len=False,
    # SA: max_running_requests unset -> min(max_total_num_tokens // 2, req_pool_size)
    # (tp_worker.py, model_runner.py): derived from KV capacity, not a constant.
    max_num_seqs_default=None,
    device_defaults=(),  # SA keys its defaults by GPU memory, not by GPU name
    memory_fraction_kind="mem_fraction_static",
    # SA `__post_init__`: mem_fraction_static by TP size (GPUs up to 80 GiB; 0.4.6 raises it on
    # GPUs above 96 GiB).
    memory_fraction_by_tp=((16, 0.79), (8, 0.81), (4, 0.85), (2, 0.87), (1, 0.88)),
    block_size_default=1,  # SA `page_size` 1: the radix cache works per token
    prefix_caching_default=True,  # SA `disable_radix_cache` False
    cuda_graphs_default=True,  # SA `disable_cuda_graph` False
    cuda_graph_decode_sizes=DECODE_GRAPH_SIZES,
    cuda_graph_max_seq_len=None,  # CGR: graphs do not depend on the sequence length
    # CGR `can_run`, forward_batch_info `is_cuda_graph`: decode (and idle/verify) batches
    # only; extend/prefill batches always run eagerly.
    graphs_prefill=False,
    graphed_prefill_max_tokens=0,
    # SCH `event_loop_overlap` (default since 0.4.0, BLOG): the forward runs in a worker thread
    # with future token ids while the CPU schedules step n+1 and processes step n-1.
    async_output_default=True,
    overlap_scheduler_default=True,
    multi_step_supported=False,  # SA has no multi-step option
    multi_step_with_chunked_prefill=False,  # no multi-step at all
    # TokenizerManager (HTTP), one Scheduler per TP rank, DetokenizerManager: separate
    # processes (engine.py).
    separate_api_process=True,
    # MR: fa3 on Hopper for Llama/Qwen/Gemma-type models (0.4.5.post1+), flashinfer else;
    # fp8_e4m3 KV keeps fa3/flashinfer (fp8_e5m2 with fa3 switches to triton).
    attention_backend=(
        ("half", "fa3 on Hopper for Llama/Qwen/Gemma-type models, else flashinfer"),
        ("float8", "fa3 (FP8 e4m3 KV) on Hopper, else flashinfer"),
    ),
    # MR: the cost model charges fa3 as FlashAttention and flashinfer as FlashInfer (same
    # prefill efficiency, two launches); below SM 8.0 SGLang runs its triton backend, charged
    # as flashinfer (an approximation).
    attention_choice=AttentionChoice(
        by_kv_dtype=(("half", "flashinfer"),),
        pre_ampere="flashinfer",
        hopper=(("half", "flash-attn"), ("float8", "flash-attn")),
    ),
    # Not read kernel by kernel for SGLang: vLLM 0.6's per-layer counts are used (SGLang's
    # Llama also launches rotary, KV write and its FP8 quantisation from Python).
    eager_kernels=V0_EAGER_KERNELS,
    custom_all_reduce_default=True,  # SA `disable_custom_all_reduce` False
    flags=COMMON_FLAGS | {NO_CHUNKING_FLAG},
    flag_spelling=(
        ("--enforce-eager", "--disable-cuda-graph"),
        ("--max-model-len", "--context-length"),
        ("--enable-prefix-caching", "radix cache (--disable-radix-cache to turn off)"),
        ("--chunked-prefill", "--chunked-prefill-size N"),
        ("--no-chunked-prefill", "--chunked-prefill-size -1"),
        ("--max-num-seqs", "--max-running-requests"),
        ("--max-num-batched-tokens", "--chunked-prefill-size"),
        ("--block-size", "--page-size"),
        ("--gpu-memory-utilization", "--mem-fraction-static"),
    ),
    sources=(_SA, _SCH, _SP, _SB, _CGR, _MR, _BLOG),
    not_modelled=(
        "max_prefill_tokens (16384) per prefill batch with chunking on: the chunk (8192 or "
        "2048 tokens) always binds first",
        "the ignore_eos admission path (SP add_one_req_ignore_eos), taken only with the radix "
        "cache off",
        "max_running_requests derived from KV capacity: the tool bounds running sequences "
        "only by KV blocks unless --max-num-seqs is given",
        "radix (prefix) cache: simulated as a block cache of --block-size tokens with LRU "
        "eviction (vLLM V1's rules), not as a token-level radix tree",
        "larger mem_fraction_static and CUDA-graph sizes (to 256) on GPUs above 96 GiB",
        "mem_fraction_static covers weights + KV pool; it is passed as the tool's "
        "gpu_memory_utilization",
    ),
    kernel_mode_note=(
        "kernel prefill-first mode: prefill-only and decode-only steps, a new prefill batch "
        "tried first (the SGLang rule), at most the chunk size (8192 on GPUs of 25 GB and "
        "more, else 2048) of prompt tokens per step, a longer prompt split over consecutive "
        "steps; SGLang's admission by new_token_ratio and its retraction (ADMIT_TOKEN_RATIO)."
    ),
    # srt/layers/quantization/fp8_kernel.py (0.4.5-0.4.6): DeepGEMM for the dense block-FP8
    # linears on Hopper (SGL_ENABLE_JIT_DEEPGEMM); srt/layers/moe/fused_moe_triton: the Triton
    # fused-MoE kernel for the experts unless DeepEP / EP-MoE is asked for
    block_fp8_dense_kernel="deepgemm",
    fused_moe_kernel="triton",
)

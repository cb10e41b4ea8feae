"""The typed description of one serving engine at one version (`EngineProfile`).

A profile says how the engine forms a step, what it does when memory runs out, its defaults
(token budget, sequences, memory fraction, block size, CUDA graphs, prefix caching), its host
overlap features, its attention backend per KV-cache dtype and the launch flags it has. Every
value is set in the engine's own module next to a comment naming the source file at a version,
or a documentation page, where it was read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# How one engine step is formed.
# prefill-first: a step holds whole prompts only (waiting requests FCFS up to the token budget);
#     running requests decode only in steps without prefill (vLLM V0 without chunked prefill).
# chunked-mixed: running requests (decodes, partial prefills) first, then new prompts, split to
#     fit one token budget; decodes and prefill chunks share a step (vLLM V0 chunked, vLLM V1).
# prefill-first-chunked: a step is prefill-only or decode-only; a new prefill batch is tried
#     first and long prompts are split into chunks over consecutive prefill steps (SGLang).
# inflight: context and generation requests share a step under max_num_tokens; prompts are not
#     split unless chunked context is on (TensorRT-LLM in-flight batching).
StepFormation = Literal["prefill-first", "chunked-mixed", "prefill-first-chunked", "inflight"]

# The kernel's two scheduling modes (apex_fast.sim.stream.SchedulerConfig.chunked).
KernelMode = Literal["prefill-first", "chunked-mixed"]

# What the engine's memory-fraction knob means.
# gpu_memory_utilization: fraction of the whole GPU for weights + activations + KV (vLLM).
# mem_fraction_static: fraction of the whole GPU for weights + KV pool (SGLang).
# kv_cache_free_gpu_mem_fraction: fraction of the memory left free after the weights and
#     activations that becomes KV cache (TensorRT-LLM).
MemoryFractionKind = Literal[
    "gpu_memory_utilization", "mem_fraction_static", "kv_cache_free_gpu_mem_fraction"
]

# How the engine measures the peak memory of its KV-cache profiling step (plans/memory.py
# `profiling_terms`, docs/memory.md).
# free-memory-difference: free memory before - after the step; counts the caching allocator's
#     reserve and all non-PyTorch memory (vLLM <= 0.6.3).
# allocated-peak: PyTorch's allocated-bytes peak + non-PyTorch memory (vLLM >= 0.6.4, V1).
MemoryPeakRule = Literal["free-memory-difference", "allocated-peak"]

# Launch settings this tool can express, grouped by which engines have them; an engine lists
# those it has and the CLI rejects the rest.
# Settings every profiled engine has (its own spelling in EngineProfile.flag_spelling).
COMMON_FLAGS = frozenset(
    {
        "--enforce-eager",
        "--disable-custom-all-reduce",
        "--max-model-len",
        "--enable-prefix-caching",
        "--chunked-prefill",
        "--max-num-seqs",
        "--max-num-batched-tokens",
        "--block-size",
        "--gpu-memory-utilization",
    }
)
# Turning chunked prefill off: every engine but vLLM V1, which always chunks.
NO_CHUNKING_FLAG = "--no-chunked-prefill"
# vLLM V0 only: multi-step scheduling and the API server in the engine's process.
V0_ONLY_FLAGS = frozenset({"--num-scheduler-steps", "--disable-frontend-multiprocessing"})
KNOWN_FLAGS = COMMON_FLAGS | {NO_CHUNKING_FLAG} | V0_ONLY_FLAGS

# Attention kernels the cost model distinguishes (apex_fast/sim/costs/, sim/step_time.py):
# flash-attn: FlashAttention-2/3 for prefill and paged decode; xformers: xFormers prefill +
# vLLM PagedAttention decode (prefill at about 2/3 of FlashAttention's throughput);
# flashinfer: FlashInfer prefill/decode; trtllm: TensorRT-LLM's own fused attention op (context
# FMHA, XQA/masked MHA generation kernels, RoPE and KV-cache write inside the op).
AttentionKernel = Literal["flash-attn", "xformers", "flashinfer", "trtllm"]

# GPUs older than SM 8.0: no FlashAttention-2.
PRE_AMPERE = ("V100", "T4", "P100")
# Hopper GPUs (SM 9.0): FlashAttention-3.
HOPPER = ("H100", "H200", "H800", "H20", "GH200")


@dataclass(frozen=True)
class AttentionChoice:
    """The attention kernel an engine runs, by KV-cache dtype and GPU generation."""

    by_kv_dtype: tuple[tuple[str, AttentionKernel], ...]  # first: the default for other dtypes
    pre_ampere: AttentionKernel  # on GPUs older than SM 8.0, whatever the KV dtype
    # on Hopper, by KV dtype, where it differs from by_kv_dtype
    hopper: tuple[tuple[str, AttentionKernel], ...] = ()

    def kernel(self, kv_dtype: str, device_name: str) -> AttentionKernel:
        name = device_name.upper()
        if name.startswith(PRE_AMPERE):
            return self.pre_ampere
        if name.startswith(HOPPER):
            hop = dict(self.hopper)
            if kv_dtype in hop:
                return hop[kv_dtype]
        table = dict(self.by_kv_dtype)
        return table.get(kv_dtype, self.by_kv_dtype[0][1])


@dataclass(frozen=True)
class EagerKernels:
    """Kernels one eager forward launches per decoder layer where engines differ (the shared
    ones, norms, GEMMs, activation, MoE, are counted in apex_fast/sim/step_time.py)."""

    rotary: int  # rotary embedding as its own launch (0: fused into the attention op)
    kv_write: int  # KV-cache write as its own launch (0: fused into the attention op)
    # W8A8 FP8: launches that quantise one linear's input (dynamic scales: reduce + quantise
    # + scale buffer; static checkpoint scales: one quantise kernel)
    fp8_quant_per_linear: int
    # W8A8 FP8: linears per layer whose input arrives already in FP8 (the previous kernel
    # writes it quantised), so they launch no quantisation
    fp8_prequantised_linears: int
    custom_all_reduce: int  # launches of one custom (NVLink) all-reduce in an eager step


@dataclass(frozen=True)
class EngineProfile:
    """One engine at one version: scheduling rules, defaults and launch flags."""

    # --- identity ---------------------------------------------------------------------
    name: str  # registry name, the value of --engine
    display_name: str  # as printed in reports
    version: str  # the release the facts describe
    versions_read: str  # releases whose sources were read for these facts

    # --- scheduling -------------------------------------------------------------------
    step_formation: StepFormation  # with the engine's default chunking setting
    step_formation_chunked: StepFormation  # with chunked prefill on
    chunked_prefill_default: bool  # chunked prefill on without any flag
    # chunked prefill turns itself on when max_model_len exceeds this (vLLM 0.5.3+); None = no
    chunked_auto_above_max_model_len: int | None
    chunked_prefill_can_be_disabled: bool  # False: the engine always chunks (vLLM V1)
    preemption: str  # what happens when KV blocks run out mid-decode
    admission: str  # when a waiting request may start
    # the kernel's KV admission policy (kernels/params.py ADMIT_*: 0 whole prompt above a
    # watermark, 1 prompt + max output reserved and no preemption, 2 blocks per scheduled
    # chunk); docs/scheduler.md "Admission policies"
    admission_policy: int

    # --- defaults ---------------------------------------------------------------------
    # tokens per step with chunked prefill, by GPU memory: ((min_gib, tokens), ...) tried in
    # order, first match wins
    budget_chunked_by_memory: tuple[tuple[float, int], ...]
    # without chunked prefill the budget is max(this, max_model_len) (vLLM V0), or this alone
    budget_unchunked_floor: int
    budget_unchunked_uses_max_model_len: bool
    max_num_seqs_default: int | None  # None: derived from KV capacity (SGLang)
    # per-device defaults where the engine keys them by GPU name:
    # ((name substring, budget with chunked prefill, max_num_seqs), ...)
    device_defaults: tuple[tuple[str, int, int], ...]
    memory_fraction_kind: MemoryFractionKind
    # memory fraction by tensor-parallel size: ((min_tp, fraction), ...), largest min_tp first
    memory_fraction_by_tp: tuple[tuple[int, float], ...]
    block_size_default: int  # KV block / page size in tokens
    prefix_caching_default: bool

    # --- CUDA graphs and host overlap -------------------------------------------------
    cuda_graphs_default: bool
    # decode batch sizes captured by default (the largest is the biggest graphed decode batch)
    cuda_graph_decode_sizes: tuple[int, ...]
    cuda_graph_max_seq_len: int | None  # longest sequence a decode graph covers; None = any
    graphs_prefill: bool  # steps holding prefill tokens replay a graph
    graphed_prefill_max_tokens: int  # largest such step that is graphed (0 = none)
    async_output_default: bool  # step n's output processing overlaps step n+1 on the GPU
    overlap_scheduler_default: bool  # step n+1 is scheduled while step n runs
    multi_step_supported: bool  # --num-scheduler-steps N > 1 exists
    multi_step_with_chunked_prefill: bool  # both at once are accepted
    separate_api_process: bool  # HTTP server / detokeniser run in their own process

    # --- kernels and communication ----------------------------------------------------
    # attention backend by KV-cache dtype of this tool ("half", "float8", ...), as the engine
    # names it (reports)
    attention_backend: tuple[tuple[str, str], ...]
    # the kernel family the cost model charges for it (by KV dtype and GPU)
    attention_choice: AttentionChoice
    eager_kernels: EagerKernels  # per-layer launches where engines differ (eager steps)
    custom_all_reduce_default: bool  # one-kernel NVLink all-reduce for small messages

    # --- launch flags -----------------------------------------------------------------
    flags: frozenset[str]  # the settings of KNOWN_FLAGS this engine has
    # how this engine spells each of those settings, for messages and docs
    flag_spelling: tuple[tuple[str, str], ...]

    # --- provenance and limits --------------------------------------------------------
    sources: tuple[str, ...]  # engine source files at a version, docs URLs
    not_modelled: tuple[str, ...]  # engine behaviour the simulation does not reproduce
    kernel_mode_note: str  # how the step formation maps onto the kernel's modes

    # --- prefix cache without prompt hashes -------------------------------------------
    # With prefix caching on and a workload that carries no prompt hashes, treat every prompt
    # as distinct and give its blocks keys of their own, so that a preempted request finds
    # its own freed prompt blocks when it is recomputed (docs/scheduler.md "Prefix cache").
    # False: no keys, prefix caching has no effect on such a workload.
    hashless_prompts_keep_own_blocks: bool = False
    # --- memory profiling -------------------------------------------------------------
    # how the KV-cache sizing measures the profiling step's peak (MemoryPeakRule); the default
    # is vLLM 0.6.0's, the rule the simulation was calibrated with
    memory_peak_rule: MemoryPeakRule = "free-memory-difference"
    # --- front end ----------------------------------------------------------------------
    # Seconds from a client sending a request to the engine loop being able to schedule it,
    # spent outside the engine's steps (HTTP parsing, chat template, tokenisation, hand-off to
    # the engine process), plus the hand-back of the first token (detokenise, stream). A
    # latency per request, not a shared server: applied once, in sim/engine.py simulate_plan
    # (the kernel sees each request this much later; TTFT and latency count from the send).
    # 0 = not modelled for this engine.
    request_frontend_s: float = 0.0
    # --- block-scaled FP8 and fused-MoE kernels (DeepSeek-V3/R1 checkpoints) -----------
    # kernel family of the dense block-FP8 linears and of the fused-MoE expert GEMMs
    # (profiles/analytic.py BLOCK_FP8_KERNEL_RATE; "deepgemm": the device model's own rate,
    # "triton": also the Triton fused-MoE kernel's row tiles, sim/costs/cells.py)
    block_fp8_dense_kernel: str = "deepgemm"
    fused_moe_kernel: str = "deepgemm"
    # expert parallelism through an expert map (vLLM 0.8.x): every rank runs one fused-MoE
    # call over all tokens and the global experts; row blocks of other ranks' experts write
    # zeros, the intermediate buffers span all tokens x top-k rows, and an all-reduce sums
    # the ranks' outputs
    moe_ep_expert_map: bool = False

    # ----------------------------------------------------------------------------------
    def _device_rule(self, device_name: str) -> tuple[str, int, int] | None:
        for rule in self.device_defaults:
            if rule[0].upper() in device_name.upper():
                return rule
        return None

    def budget_chunked(self, device_name: str, gpu_mem_gib: float) -> int:
        """Default tokens per step with chunked prefill on this GPU."""
        rule = self._device_rule(device_name)
        if rule is not None:
            return rule[1]
        for min_gib, tokens in self.budget_chunked_by_memory:
            if gpu_mem_gib >= min_gib:
                return tokens
        return self.budget_chunked_by_memory[-1][1]

    def max_num_seqs(self, device_name: str) -> int | None:
        """Default maximum of running sequences on this GPU (None: derived from memory)."""
        rule = self._device_rule(device_name)
        return rule[2] if rule is not None else self.max_num_seqs_default

    def memory_fraction(self, tp: int) -> float:
        """Default memory fraction at this tensor-parallel size."""
        for min_tp, frac in self.memory_fraction_by_tp:
            if tp >= min_tp:
                return frac
        return self.memory_fraction_by_tp[-1][1]

    def chunked_by_default(self, max_model_len: int | None) -> bool:
        """Whether chunked prefill is on when the user does not say."""
        if self.chunked_prefill_default:
            return True
        limit = self.chunked_auto_above_max_model_len
        return limit is not None and max_model_len is not None and max_model_len > limit

    def kernel_mode(self, chunked: bool) -> KernelMode:
        """The kernel mode that runs this engine's step formation."""
        form = self.step_formation_chunked if chunked else self.step_formation
        if form in ("chunked-mixed", "inflight"):
            return "chunked-mixed"
        return "prefill-first"

    def backend_for(self, kv_dtype: str) -> str:
        """Attention backend used with this KV-cache dtype."""
        table = dict(self.attention_backend)
        return table.get(kv_dtype, table.get("half", "unknown"))

    def attention_kernel(self, kv_dtype: str, device_name: str) -> AttentionKernel:
        """Attention kernel family the cost model charges with this KV dtype on this GPU."""
        return self.attention_choice.kernel(kv_dtype, device_name)

    def spelling(self, flag: str) -> str:
        """The engine's own name for one of this tool's flags."""
        return dict(self.flag_spelling).get(flag, flag)

    @property
    def max_graphed_decode_batch(self) -> int:
        return max(self.cuda_graph_decode_sizes) if self.cuda_graph_decode_sizes else 0

"""Slots of the kernel's packed scalar parameters (no Numba here: sim/stream.py imports it).

`simulate_stream` takes its scalar parameters as one float64 array `pf` and one int64 array `pi`
(a Numba call pays type dispatch per argument; two arrays replace 19 scalars). The slots are
module-level integers, compile-time constants in the kernel. `sim/stream.kernel_params` is the
one Python function that fills them (note: Numba's cache does not see a change here; clear
`kernels/__pycache__` after renumbering).
"""

from __future__ import annotations

# ---- pf: float64 parameters
PF_C_ATTN = 0  # s per causal query-key pair of prefill attention
PF_C_CTX = 1  # s per context token read by a decode
PF_OVERHEAD = 2  # s of host time per step
PF_HOST_SEQ = 3  # s of host time per scheduled sequence per step
PF_EAGER_FLOOR = 4  # s, launch floor of an eager step
PF_PIECEWISE_FLOOR = 5  # s, launch floor of a step replaying piecewise graphs
PF_FULL_FRAC = 6  # share of the KV bytes in full-attention layers (sliding window)
# state slots of ADMIT_TOKEN_RATIO, written by the kernel into its own copy of `pf`
# (kernels/token_ratio.py): kernel_params fills their starting values
PF_RATIO0 = 7  # new_token_ratio at its last reset (the initial value, or a retraction's estimate)
PF_RATIO_STEPS = 8  # decode steps since that reset (the ratio decays by one step each)
PF_BLOCKED = 9  # running requests when admission last ran out of tokens (inf: not blocked)
N_PF = 10

# ---- pi: int64 parameters
PI_NUM_BLOCKS = 0  # KV capacity of the stream, blocks (all attention copies)
PI_BLOCK_SIZE = 1  # tokens per KV block
PI_WATERMARK = 2  # blocks kept free when admitting, per attention copy
PI_MAX_NUM_SEQS = 3  # running sequences at most
PI_BUDGET = 4  # batched tokens per step at most
PI_CHUNKED = 5  # 1: chunked prefill (vLLM _schedule_chunked_prefill), 0: _schedule_default
PI_OUTPUT_LAG = 6  # 1: async output processing (outputs delivered when the next step ends)
PI_MAX_CONC = 7  # closed loop: requests in the system at most (0: open loop)
PI_PC_NKEYS = 8  # distinct prefix-cache block keys (0: prefix cache off)
PI_WIN_BLOCKS = 9  # sliding-window blocks per sequence (0: no window)
PI_GRAPH_MAX_SEQS = 10  # decode-only batches of at most this many sequences replay a CUDA graph
PI_PIECEWISE_TOKENS = 11  # steps of at most this many tokens replay piecewise graphs
PI_ADMISSION = 12  # KV admission policy: ADMIT_WHOLE_PROMPT, ADMIT_NO_EVICT, ADMIT_PER_CHUNK
PI_COPIES = 13  # attention copies, each a pool of NUM_BLOCKS / COPIES blocks (docs/memory.md)
PI_PREFILL_CHUNK = 14  # ADMIT_TOKEN_RATIO: prefill tokens per step, prompts split (0: unsplit)
PI_LAZY_MIN = 15  # running sequences from which decodes are advanced as a set (0: never)
# vLLM V0 multi-step scheduling (--num-scheduler-steps N): decode steps per scheduler call; a
# decode window reserves the KV of N - 1 lookahead tokens and runs N steps unchanged (1: off;
# docs/scheduler.md "Multi-step scheduling")
PI_SCHED_STEPS = 16
N_PI = 17

# ---- values of PI_ADMISSION (docs/scheduler.md "Admission policies")
ADMIT_WHOLE_PROMPT = 0  # vLLM V0: the blocks of the whole prompt at admission, above a watermark
ADMIT_NO_EVICT = 1  # TensorRT-LLM GUARANTEED_NO_EVICT: prompt + max output reserved, no preemption
ADMIT_PER_CHUNK = 2  # vLLM V1: blocks per scheduled chunk; no admission in a step that preempted
ADMIT_TOKEN_RATIO = 3  # SGLang PrefillAdder: tokens free less running requests x new_token_ratio

# ---- SGLang's admission constants (ADMIT_TOKEN_RATIO; kernels/token_ratio.py). Defaults of
# sglang 0.4.6.post5 (unchanged in 0.5.6): python/sglang/global_config.py
# (default_init_new_token_ratio, default_min_new_token_ratio_factor,
# default_new_token_ratio_decay_steps, retract_decode_steps), srt/managers/schedule_policy.py
# (CLIP_MAX_NEW_TOKENS_ESTIMATION), srt/managers/scheduler.py (init/min/decay with
# schedule_conservativeness 1.0, server_args.py default).
INIT_NEW_TOKEN_RATIO = 0.7  # share of a running request's remaining output reserved at first
MIN_NEW_TOKEN_RATIO = INIT_NEW_TOKEN_RATIO * 0.14  # the floor the ratio decays to (0.098)
NEW_TOKEN_RATIO_DECAY = (INIT_NEW_TOKEN_RATIO - MIN_NEW_TOKEN_RATIO) / 600.0  # per decode step
CLIP_MAX_NEW_TOKENS = 4096  # tokens, cap on a request's output counted in the reservation
RETRACT_DECODE_STEPS = 20  # tokens per remaining request that a retraction frees room for

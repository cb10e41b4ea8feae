"""Serving-engine constants of the simulation (vLLM 0.6 defaults and fitted overheads)."""

# Fixed CPU-side cost of one engine step: scheduling, input preparation, sampler bookkeeping and
# detokenisation in vLLM 0.6 with CUDA graphs. Fitted (grid search, docs/validation.md) on the 45
# measured vLLM 0.6 Llama-3.1-70B runs on 8x H100: 3.5 ms minimises the ITL and latency errors.
ENGINE_STEP_OVERHEAD_S = 3.5e-3

# vLLM keeps 1% of the KV blocks free when admitting new prompts (BlockSpaceManager watermark).
WATERMARK_FRACTION = 0.01

# vLLM's default batch limits.
DEFAULT_MAX_NUM_SEQS = 256
DEFAULT_CHUNKED_BUDGET = 2048
DEFAULT_BLOCK_SIZE = 16
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9

# Latency of vLLM's custom all-reduce for small messages (one kernel reading peers' buffers
# over NVLink, inside a CUDA graph). Not fitted: the reference runs cannot separate it from the
# step overhead; ~6 us is the order of a one-shot NVLink all-reduce kernel.
CUSTOM_AR_LATENCY_S = 6.0e-6

# CPU time to launch one decoder layer's kernels in eager mode (PyTorch + vLLM Python). A step
# holding prefill tokens runs eagerly (vLLM 0.6 replays CUDA graphs for decode-only batches),
# so it lasts at least num_layers x this. Fitted in docs/validation.md.
EAGER_LAYER_OVERHEAD_S = 450e-6  # fitted: 36 ms for 80 layers; TTFT error 7.1%

# CPU time per sequence that emits a token in a step (sampling metadata, detokenisation, output
# objects and SSE streaming in vLLM 0.6's single-process server). Kept at 0: a fit on the
# reference runs wants ~350 us (ITL error 2.2% -> 1.1%), but those runs never exceed ~10
# concurrent sequences, and 350 us x 256 sequences would add ~90 ms to every large-batch step.
# See docs/validation.md, "Per-sequence CPU cost".
ENGINE_SEQ_OVERHEAD_S = 0.0

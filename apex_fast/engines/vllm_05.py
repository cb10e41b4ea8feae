"""vLLM 0.5 (V0 engine, as of 0.5.3): the 0.6 scheduler without the 0.6 host-side speed-ups.

The scheduling rules, defaults, CUDA graphs and attention selection are those of vLLM 0.6
(`vllm_06.py`), read in the 0.5.x releases; this module lists only what differs.
  A   = https://github.com/vllm-project/vllm/blob/v0.5.3/vllm/engine/arg_utils.py
  C   = https://github.com/vllm-project/vllm/blob/v0.5.3/vllm/config.py
  S   = https://github.com/vllm-project/vllm/blob/v0.5.3/vllm/core/scheduler.py
  MR  = https://github.com/vllm-project/vllm/blob/v0.5.5/vllm/worker/model_runner.py
  SEL = https://github.com/vllm-project/vllm/blob/v0.5.5/vllm/attention/selector.py
  BLOG = https://blog.vllm.ai/2024/09/05/perf-update.html (v0.5.3 is its baseline)
"""

from __future__ import annotations

import dataclasses

from apex_fast.engines.vllm_06 import DECODE_GRAPH_SIZES_256, VLLM_06

_A = "https://github.com/vllm-project/vllm/blob/v0.5.3/vllm/engine/arg_utils.py"
_C = "https://github.com/vllm-project/vllm/blob/v0.5.3/vllm/config.py"
_S = "https://github.com/vllm-project/vllm/blob/v0.5.3/vllm/core/scheduler.py"
_MR = "https://github.com/vllm-project/vllm/blob/v0.5.5/vllm/worker/model_runner.py"
_SEL = "https://github.com/vllm-project/vllm/blob/v0.5.5/vllm/attention/selector.py"
_BLOG = "https://blog.vllm.ai/2024/09/05/perf-update.html"

VLLM_05 = dataclasses.replace(
    VLLM_06,
    name="vllm-0.5",
    display_name="vLLM 0.5 (V0 engine)",
    version="0.5.3",
    versions_read="0.5.0-0.5.5",
    # A: chunked prefill turns itself on for max_model_len > 32768 from 0.5.3 (0.5.0-0.5.2:
    # always off unless asked); budget 512 chunked / max(max_model_len, 2048) unchunked (C).
    chunked_auto_above_max_model_len=32768,
    # S (0.5.0 sorted the running queue FCFS before picking the victim; later 0.5.x as 0.6).
    preemption="recompute; victim = last running request (swap only for beam search / n>1)",
    # MR: 0.5.x captures [1, 2, 4] + multiples of 8 up to 256 (max_num_seqs 256).
    cuda_graph_decode_sizes=DECODE_GRAPH_SIZES_256,
    # Async output processing arrived in 0.6.0 (BLOG; PRs #7049, #7921, #8050): in 0.5.x
    # output processing runs between steps, on the critical path.
    async_output_default=False,
    # Multi-step scheduling (PR #7000, BLOG) is not in 0.5.3's arguments (A).
    multi_step_supported=False,
    multi_step_with_chunked_prefill=False,
    # In 0.5.3 the API server and the engine share one process (and the GIL); the split
    # (PR #6883) shipped in 0.5.4 (a maintainer's answer in vLLM issue #7653), and BLOG lists
    # it among the changes since its 0.5.3 baseline.
    separate_api_process=False,
    flags=VLLM_06.flags - {"--num-scheduler-steps"},  # A: no num_scheduler_steps in 0.5.3
    sources=(_A, _C, _S, _MR, _SEL, _BLOG),
    not_modelled=VLLM_06.not_modelled[:2] + VLLM_06.not_modelled[-1:],
    kernel_mode_note=(
        "chunked prefill off -> kernel prefill-first mode (exact rule); on -> chunked-mixed "
        "mode (exact rule). Defaults are the engine's: chunked prefill only when "
        "--max-model-len > 32768, 512 tokens per step when chunking, else "
        "max(max_model_len or the longest request, 2048)."
    ),
)

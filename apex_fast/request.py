"""What the user asks of `plan` (and `capacity`): one frozen record, the single declaration of
its fields and defaults. The command line builds it (apex_fast/cli/plan.py takes its defaults
from here); apex_fast/planner.py turns it into model, cluster, workload and engine settings.

The serving engine's launch settings are one `LaunchSettings` (apex_fast/engines/options.py),
whose None values take the chosen engine's defaults from its profile (apex_fast/engines/).
It imports nothing numerical, so the command line can read the defaults before it loads the
simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from apex_fast.engines.options import LaunchSettings

if TYPE_CHECKING:
    from apex_fast.sim.speculative import SpeculativeConfig


@dataclass(frozen=True)
class PlanRequest:
    model: str
    gpus_per_node: int
    num_nodes: int = 1
    gpu: str = "H100-SXM-80GB"
    inter_node_gbps: float | None = None  # GB/s per GPU per direction; None = device default
    num_experts: int | None = None
    topk: int | None = None  # None = the model's own top-k
    capacity_factor: float = 1.0
    frequency: int = 0
    # the workload: a trace, or synthetic requests (apex_fast.workload.WorkloadOptions;
    # vLLM bench serve names)
    trace_file: Path | None = None
    prompt_len: int = 2048
    output_len: int = 128
    num_requests: int = 1024
    request_rate: float | None = None  # None: the trace's own times, or all at t = 0
    burstiness: float = 1.0
    max_concurrency: int = 0
    length_dist: str | None = None
    random_range_ratio: float = 0.0
    seed: int = 0
    kv_dtype: str = "half"
    # None: the checkpoint's own format (FP8 weights and activations for an FP8 checkpoint such
    # as DeepSeek-V3), else half
    weight_dtype: str | None = None
    activation_dtype: str | None = None
    request_percentiles: tuple[float, ...] = ()
    token_percentiles: tuple[float, ...] = ()
    ttft_slo_ms: float = math.inf  # none unless asked (as on the command line)
    tpot_slo_ms: float = math.inf
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    ep: int | None = None
    # the serving engine and its settings (None = the engine's default)
    launch: LaunchSettings = field(default_factory=LaunchSettings)
    router: str = "round-robin"  # data-parallel routing (--router)
    objective: str = "latency"
    profile_dir: Path | None = None  # measured tables root (default profile_data/)
    gpu_hour_cost: float = 0.0  # $ per GPU-hour (0 = no $ figures)
    pareto_csv: Path | None = None
    plot_png: Path | None = None
    workers: int | None = None  # plan evaluation processes (None = automatic)
    ray_address: str | None = None  # evaluate plans on Ray (needs the `ray` extra)
    mode: str = "agg"  # agg | disagg | both (apex_fast.disagg)
    speculative: SpeculativeConfig | None = None
    kv_transfer_latency_ms: float | None = None  # disaggregated: None = the documented default
    requests_out: Path | None = None  # per-request timelines (Parquet)
    plot_cdf: Path | None = None  # TTFT/TPOT/latency CDFs (PNG)

"""Workloads: what requests arrive when, with how many prompt and output tokens.

One module per concept:
- types.py: the `Workload` (arrays sorted by arrival, closed-loop clients, prompt hash ids)
- options.py: benchmark-style options (`--request-rate`, `--length-dist`, ...) -> Workload
- readers.py: `load_trace`, which picks the reader of a trace file: read_jsonl.py (APEX+ and
  Mooncake JSON lines), read_csv.py (Azure CSV, Polars), read_bench.py (`vllm bench serve`
  result files); columns.py holds their shared bounds and checks
- generators.py: synthetic arrivals and lengths; multiturn.py: multi-turn chat traces;
  writers.py: JSON-lines trace files
- scaling.py: the same requests at another rate (`capacity`, disaggregated goodput)
- encoder_decoder.py: the encoder's and decoder's workloads of an encoder-decoder model
"""

from apex_fast.workload.columns import MAX_LINE_BYTES, MAX_TOKENS
from apex_fast.workload.options import WorkloadOptions, build_workload
from apex_fast.workload.readers import load_trace
from apex_fast.workload.scaling import scaled
from apex_fast.workload.types import Workload, closed_loop_split, static_workload

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_TOKENS",
    "Workload",
    "WorkloadOptions",
    "build_workload",
    "closed_loop_split",
    "load_trace",
    "scaled",
    "static_workload",
]

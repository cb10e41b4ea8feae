"""Measured serving runs: the bundled validation data and how it is built from the reference.

`data/runs.csv` has one row per measured server (its settings and the measured mean TTFT, ITL and
request latency); `data/requests.parquet` the engine's real per-request lengths and arrival
offsets of each run. Both are written by `bench/make_validation_data.py` from the reference
measurements (`../shared/reference`: vLLM 0.6.0 on 8x H100-SXM-80GB serving Llama-3.1-70B in
bf16 and Mistral-Large-2407 in FP8); provenance is in `data/README.md`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from apex_fast.dtypes import canonical_dtype
from apex_fast.errors import ApexError
from apex_fast.workload import Workload

DATA_DIR = Path(__file__).resolve().parent / "data"
RUNS_FILE = DATA_DIR / "runs.csv"
REQUESTS_FILE = DATA_DIR / "requests.parquet"

# reference file -> (family label, bundled model name)
FAMILIES = {
    "measured_llama.csv": ("llama-bf16", "llama3.1-70b"),
    "measured_mistral.csv": ("mistral-fp8", "mistral-large-2407"),
}


@dataclass(frozen=True)
class Run:
    """One measured server: what ran, on what, with which settings, and what was measured."""

    run_id: int
    family: str
    label: str
    engine: str
    model: str
    gpu: str
    tp: int
    dp: int
    workload_name: str
    rate: float
    weight_dtype: str
    activation_dtype: str
    kv_dtype: str
    chunked: bool
    budget: int
    max_model_len: int
    custom_all_reduce: bool
    gpu_memory_utilization: float
    max_num_seqs: int
    block_size: int
    frontend_in_process: bool
    workload: Workload
    ttft_s: float
    itl_s: float
    latency_s: float

    @property
    def regime(self) -> str:
        """Load regime of the run (for error bands): mean prompt and output lengths."""
        return regime_of(float(np.mean(self.workload.prompt)), float(np.mean(self.workload.output)))


def regime_of(mean_prompt: float, mean_output: float) -> str:
    """'prefill-heavy', 'decode-heavy' or 'mixed' by the mean prompt/output ratio."""
    ratio = mean_prompt / max(mean_output, 1.0)
    if ratio >= 4.0:
        return "prefill-heavy"
    if ratio <= 0.5:
        return "decode-heavy"
    return "mixed"


def _dtype(value: str) -> str:
    """Our dtype name for a column value such as 'fp8 (scheme of checkpoint; ...)'."""
    return canonical_dtype(value.split()[0].split("_")[0])


def launch_settings(launch: str) -> dict:
    """Server settings from a reference `launch` line (vLLM 0.6.0 defaults where it is silent)."""
    chunked = "chunked prefill ON" in launch
    m = re.search(r"max_model_len (\d+)", launch)
    max_len = int(m.group(1)) if m else 131072
    m = re.search(r"max_num_batched_tokens=(\d+)", launch)
    budget = int(m.group(1)) if (chunked and m) else max(max_len, 2048)
    m = re.search(r"--gpu-memory-utilization ([0-9.]+)", launch)
    v = re.search(r"vllm/vllm-openai:v([0-9.]+)", launch)
    return {
        "chunked_prefill": chunked,
        "max_num_batched_tokens": budget,
        "max_model_len": max_len,
        "custom_all_reduce": "custom all-reduce off" not in launch,
        "gpu_memory_utilization": float(m.group(1)) if m else 0.9,
        "max_num_seqs": 256,
        "block_size": 16,
        "frontend_in_process": "--disable-frontend-multiprocessing" in launch,
        "engine_version": v.group(1) if v else "0.6.0",
    }


def build_from_reference(reference: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(runs, requests) frames in the bundled format, from the reference measurements."""
    lengths_path = reference / "engine_lengths.csv.gz"
    if not lengths_path.exists():
        raise ApexError(f"engine lengths {lengths_path} do not exist")
    lengths = pl.read_csv(lengths_path, infer_schema_length=0).select(
        "source_file",
        pl.col("start_time_offset_ns").cast(pl.Float64),
        pl.col("engine_prompt_tokens").cast(pl.Int64),
        pl.col("engine_output_tokens").cast(pl.Int64),
    )
    runs: list[dict] = []
    reqs: list[pl.DataFrame] = []
    for fname, (family, model) in FAMILIES.items():
        path = reference / fname
        if not path.exists():
            raise ApexError(f"measured results {path} do not exist")
        for row in pl.read_csv(path, infer_schema_length=0).iter_rows(named=True):
            if row["status"] != "ok" or not (row["itl_s_per_trace"] or "").strip():
                continue
            sub = lengths.filter(pl.col("source_file") == row["source_file"]).sort(
                "start_time_offset_ns"
            )
            if sub.height == 0:
                continue
            run_id = len(runs)
            tp, dp = int(row["tp"]), int(row["dp"])
            rep = int(row["replica"]) if (row["replica"] or "").strip() else 0
            label = f"{row['workload']} {row['rate']} TP{tp}" + (f" DP{dp}#{rep}" if dp > 1 else "")
            runs.append(
                {
                    "run_id": run_id,
                    "family": family,
                    "label": label,
                    "engine": "vllm-0.6",
                    "model": model,
                    "hf_model": row["model"],
                    "gpu": "H100-SXM-80GB",
                    "tp": tp,
                    "dp": dp,
                    "replica": rep,
                    "workload": row["workload"],
                    "rate": float(row["rate"]),
                    "weight_dtype": _dtype(row["weight_dtype"]),
                    "activation_dtype": _dtype(row["act_dtype"]),
                    "kv_dtype": _dtype(row["kv_dtype"]),
                    **launch_settings(row["launch"] or ""),
                    "n_requests": sub.height,
                    "ttft_s": float(row["ttft_s_per_trace"]),
                    "itl_s": float(row["itl_s_per_trace"]),
                    "latency_s": float(row["mean_latency_s_per_trace"]),
                    "source": f"{fname}: {row['source_file']}",
                }
            )
            t = sub["start_time_offset_ns"]
            reqs.append(
                pl.DataFrame(
                    {
                        "run_id": pl.Series([run_id] * sub.height, dtype=pl.Int32),
                        "arrival_s": ((t - t.min()) * 1e-9).cast(pl.Float64),
                        "prompt": sub["engine_prompt_tokens"].cast(pl.Int32),
                        "output": sub["engine_output_tokens"].cast(pl.Int32),
                    }
                )
            )
    return pl.DataFrame(runs), pl.concat(reqs)


def runs_from_frames(runs: pl.DataFrame, reqs: pl.DataFrame) -> list[Run]:
    """Run objects (with their workloads) from frames in the bundled format."""
    out: list[Run] = []
    parts = reqs.sort(["run_id", "arrival_s"]).partition_by("run_id", as_dict=True)
    for row in runs.iter_rows(named=True):
        sub = parts.get((row["run_id"],))
        if sub is None:
            raise ApexError(f"validation data: run {row['run_id']} has no requests")
        wl = Workload(
            arrival=np.ascontiguousarray(sub["arrival_s"].to_numpy(), dtype=np.float64),
            # an engine output of 0 tokens cannot be simulated: it ends with its first token
            prompt=np.maximum(sub["prompt"].to_numpy().astype(np.int64), 1),
            output=np.maximum(sub["output"].to_numpy().astype(np.int64), 1),
            name=row["label"],
        )
        out.append(
            Run(
                run_id=int(row["run_id"]),
                family=row["family"],
                label=row["label"],
                engine=row["engine"],
                model=row["model"],
                gpu=row["gpu"],
                tp=int(row["tp"]),
                dp=int(row["dp"]),
                workload_name=row["workload"],
                rate=float(row["rate"]),
                weight_dtype=row["weight_dtype"],
                activation_dtype=row["activation_dtype"],
                kv_dtype=row["kv_dtype"],
                chunked=bool(row["chunked_prefill"]),
                budget=int(row["max_num_batched_tokens"]),
                max_model_len=int(row["max_model_len"]),
                custom_all_reduce=bool(row["custom_all_reduce"]),
                gpu_memory_utilization=float(row["gpu_memory_utilization"]),
                max_num_seqs=int(row["max_num_seqs"]),
                block_size=int(row["block_size"]),
                frontend_in_process=bool(row["frontend_in_process"]),
                workload=wl,
                ttft_s=float(row["ttft_s"]),
                itl_s=float(row["itl_s"]),
                latency_s=float(row["latency_s"]),
            )
        )
    if not out:
        raise ApexError("validation data holds no runs")
    return out


@lru_cache(maxsize=1)
def bundled_runs() -> tuple[Run, ...]:
    """The runs bundled with the package (works on a fresh clone)."""
    if not RUNS_FILE.exists() or not REQUESTS_FILE.exists():
        raise ApexError(f"bundled validation data missing in {DATA_DIR}")
    runs = pl.read_csv(RUNS_FILE)
    reqs = pl.read_parquet(REQUESTS_FILE)
    return tuple(runs_from_frames(runs, reqs))


def reference_runs(reference: Path) -> list[Run]:
    """The runs rebuilt from a reference folder (same result as the bundled data)."""
    return runs_from_frames(*build_from_reference(reference))

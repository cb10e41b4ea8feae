"""`apex.py validate`: replay the measured vLLM runs and compare predictions with measurements.

Each usable row of `measured_llama.csv` (vLLM 0.6.0, Llama-3.1-70B, 8x H100-SXM-80GB) is one
server: one tensor-parallel group serving its own (split) trace. We rebuild that trace from the
engine's real per-request lengths (`engine_lengths.csv.gz`), simulate exactly that server (TP
degree, chunked prefill and its budget, max-model-len, custom all-reduce, memory utilisation,
max-num-seqs 256, block size 16) and compare TTFT, ITL (token-weighted inter-token latency) and
mean request latency. Method and results: docs/validation.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import typer

from apex_fast.errors import ApexError
from apex_fast.hardware.cluster import Cluster
from apex_fast.hardware.devices import get_device
from apex_fast.metrics.summary import compute_metrics
from apex_fast.models import load_model
from apex_fast.plans.enumerate import Pins, enumerate_plans
from apex_fast.sim.engine import EngineOptions, simulate_plan
from apex_fast.sim.workload import Workload

DEFAULT_REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@dataclass(frozen=True)
class Run:
    label: str
    workload_name: str
    rate: float
    tp: int
    dp: int
    replica: int
    chunked: bool
    budget: int
    max_model_len: int
    custom_all_reduce: bool
    gpu_memory_utilization: float
    workload: Workload
    ttft_s: float
    itl_s: float
    latency_s: float
    previous: tuple[Workload, ...] = ()  # traces to replay first on the same server


def _launch_settings(launch: str) -> tuple[bool, int, int, bool, float]:
    chunked = "chunked prefill ON" in launch
    m = re.search(r"max_model_len (\d+)", launch)
    max_len = int(m.group(1)) if m else 131072
    m = re.search(r"max_num_batched_tokens=(\d+)", launch)
    budget = int(m.group(1)) if (chunked and m) else max(max_len, 2048)
    custom = "custom all-reduce off" not in launch
    m = re.search(r"--gpu-memory-utilization ([0-9.]+)", launch)
    util = float(m.group(1)) if m else 0.9
    return chunked, budget, max_len, custom, util


def load_runs(measured_csv: Path, reference_dir: Path) -> list[Run]:
    if not measured_csv.exists():
        raise ApexError(f"measured results {measured_csv} do not exist")
    lengths_path = reference_dir / "engine_lengths.csv.gz"
    if not lengths_path.exists():
        raise ApexError(f"engine lengths {lengths_path} do not exist")
    meas = pl.read_csv(measured_csv, infer_schema_length=0)
    meas = meas.filter((pl.col("status") == "ok") & (pl.col("itl_s_per_trace").str.len_chars() > 0))
    lengths = pl.read_csv(lengths_path, infer_schema_length=0).select(
        "source_file",
        pl.col("start_time_offset_ns").cast(pl.Float64),
        pl.col("engine_prompt_tokens").cast(pl.Int64),
        pl.col("engine_output_tokens").cast(pl.Int64),
    )

    def workload_of(row: dict) -> Workload | None:
        sub = lengths.filter(pl.col("source_file") == row["source_file"]).sort(
            "start_time_offset_ns"
        )
        if sub.height == 0:
            return None
        t = sub["start_time_offset_ns"].to_numpy() * 1e-9
        return Workload(
            arrival=np.ascontiguousarray(t - t[0]),
            prompt=np.maximum(sub["engine_prompt_tokens"].to_numpy(), 1),
            output=np.maximum(sub["engine_output_tokens"].to_numpy(), 1),
            name=Path(row["trace_file"]).name,
        )

    all_rows = list(meas.iter_rows(named=True))
    runs: list[Run] = []
    for r in all_rows:
        wl = workload_of(r)
        if wl is None:
            continue
        # The `*_per_trace` columns are per-trace values even where the server's Prometheus
        # counters were cumulative over earlier traces (their creation@0.5 TP4 mean latency of
        # 29 s cannot include the 1-second lmsys requests served before), so each run is
        # simulated alone.
        chunked, budget, max_len, custom, util = _launch_settings(r["launch"] or "")
        tp, dp = int(r["tp"]), int(r["dp"])
        rep = int(r["replica"]) if r["replica"] not in (None, "") else 0
        label = f"{r['workload']} {r['rate']} TP{tp}" + (f" DP{dp}#{rep}" if dp > 1 else "")
        runs.append(
            Run(
                label=label,
                workload_name=r["workload"],
                rate=float(r["rate"]),
                tp=tp,
                dp=dp,
                replica=rep,
                chunked=chunked,
                budget=budget,
                max_model_len=max_len,
                custom_all_reduce=custom,
                gpu_memory_utilization=util,
                workload=wl,
                ttft_s=float(r["ttft_s_per_trace"]),
                itl_s=float(r["itl_s_per_trace"]),
                latency_s=float(r["mean_latency_s_per_trace"]),
            )
        )
    if not runs:
        raise ApexError(f"no usable rows in {measured_csv}")
    return runs


def simulate_run(run: Run, model_name: str = "llama3.1-70b", gpu: str = "H100-SXM-80GB") -> dict:
    model = load_model(model_name)
    cluster = Cluster(get_device(gpu), 1, run.tp)
    plan = enumerate_plans(model, cluster, Pins(dp=1, pp=1, tp=run.tp))[0][0]
    opts = EngineOptions(
        block_size=16,
        max_num_seqs=256,
        max_num_batched_tokens=run.budget,
        chunked_prefill=run.chunked,
        gpu_memory_utilization=run.gpu_memory_utilization,
        custom_all_reduce=run.custom_all_reduce,
    )
    sums = {"ttft": 0.0, "lat": 0.0, "n": 0, "gaps": 0.0, "ngaps": 0, "pre": 0}
    kv_tokens = 0
    for wl in (*run.previous, run.workload):
        res = simulate_plan(model, cluster, plan, wl, opts)
        if not res.feasible:
            raise ApexError(f"{run.label}: the simulated server is infeasible: {res.reason}")
        m = compute_metrics(res, wl, cluster)
        n = wl.num_requests
        sums["ttft"] += m.ttft_mean_s * n
        sums["lat"] += m.latency_mean_s * n
        sums["n"] += n
        ngaps = int(np.sum(wl.output - 1))
        sums["gaps"] += m.itl_mean_s * ngaps
        sums["ngaps"] += ngaps
        sums["pre"] += m.preemptions
        kv_tokens = res.memory.kv_tokens
    return {
        "run": run.label,
        "tp": run.tp,
        "chunked": run.chunked,
        "requests": run.workload.num_requests,
        "kv_tokens": kv_tokens,
        "ttft_pred_s": sums["ttft"] / sums["n"],
        "ttft_meas_s": run.ttft_s,
        "itl_pred_s": sums["gaps"] / sums["ngaps"],
        "itl_meas_s": run.itl_s,
        "latency_pred_s": sums["lat"] / sums["n"],
        "latency_meas_s": run.latency_s,
        "preemptions": sums["pre"],
    }


def validate(measured_csv: Path, reference_dir: Path) -> tuple[list[dict], dict[str, float]]:
    rows = [simulate_run(r) for r in load_runs(measured_csv, reference_dir)]
    for row in rows:
        for k in ("ttft", "itl", "latency"):
            row[f"{k}_err"] = row[f"{k}_pred_s"] / row[f"{k}_meas_s"] - 1.0
    mae = {
        k: float(np.mean([abs(r[f"{k}_err"]) for r in rows])) for k in ("ttft", "itl", "latency")
    }
    return rows, mae


def render(rows: list[dict], mae: dict[str, float]) -> str:
    from apex_fast.report.text import table

    body = []
    for r in rows:
        body.append(
            [
                r["run"],
                f"{r['ttft_pred_s'] * 1e3:.1f}",
                f"{r['ttft_meas_s'] * 1e3:.1f}",
                f"{100 * r['ttft_err']:+.1f}%",
                f"{r['itl_pred_s'] * 1e3:.2f}",
                f"{r['itl_meas_s'] * 1e3:.2f}",
                f"{100 * r['itl_err']:+.1f}%",
                f"{r['latency_pred_s']:.2f}",
                f"{r['latency_meas_s']:.2f}",
                f"{100 * r['latency_err']:+.1f}%",
            ]
        )
    head = [
        "Run",
        "TTFT ms",
        "meas",
        "err",
        "ITL ms",
        "meas",
        "err",
        "Latency s",
        "meas",
        "err",
    ]
    out = [table(head, body)]
    out.append(
        f"Mean absolute error over {len(rows)} runs: TTFT {100 * mae['ttft']:.1f}%, "
        f"ITL {100 * mae['itl']:.1f}%, mean latency {100 * mae['latency']:.1f}%"
    )
    return "\n".join(out)


def command(
    measured: Path = typer.Option(
        None,
        "--measured",
        help="Measured results CSV (default: <reference-dir>/measured_llama.csv).",
    ),
    reference_dir: Path = typer.Option(
        DEFAULT_REFERENCE, "--reference-dir", help="Folder with engine_lengths.csv.gz."
    ),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the rows as JSON."),
) -> None:
    """Replay measured vLLM runs (8x H100, Llama-3.1-70B) and report prediction errors."""
    if not reference_dir.exists():
        raise ApexError(f"reference folder {reference_dir} does not exist (give --reference-dir)")
    measured = measured or reference_dir / "measured_llama.csv"
    rows, mae = validate(measured, reference_dir)
    typer.echo(render(rows, mae))
    if json_path is not None:
        json_path.write_bytes(
            orjson.dumps({"runs": rows, "mean_abs_error": mae}, option=orjson.OPT_INDENT_2) + b"\n"
        )

"""Per-request timelines of a simulated plan (`--requests-out FILE.parquet`) and their CDFs
(`--plot-cdf FILE.png`). Column meanings: docs/metrics.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from apex_fast.metrics.latency import request_latencies
from apex_fast.plotting import pyplot, save_figure
from apex_fast.sim.engine import PlanResult
from apex_fast.workload import Workload


def request_table(res: PlanResult, workload: Workload) -> pl.DataFrame:
    """One row per request, in arrival order: times in seconds from the first arrival; -1 for
    first token and finish of a request the plan can never serve."""
    pp = res.plan.pp
    cols: dict[str, list[np.ndarray]] = {
        k: []
        for k in ("id", "arrival", "entry", "first", "finish", "pre", "replica", "stream", "hit")
    }
    for k, (s, ids) in enumerate(zip(res.streams, res.stream_index, strict=True)):
        sid = _stream_number(res, k)
        cols["id"].append(ids)
        cols["arrival"].append(workload.arrival[ids])
        cols["entry"].append(s.arrival if s.arrival is not None else workload.arrival[ids])
        cols["first"].append(s.first_token)
        cols["finish"].append(s.finish)
        cols["pre"].append(s.preemptions)
        cols["hit"].append(s.cached if s.cached is not None else np.zeros(ids.size, np.int64))
        cols["replica"].append(np.full(ids.size, sid // pp, np.int64))
        cols["stream"].append(np.full(ids.size, sid % pp, np.int64))
    c = {k: np.concatenate(v) for k, v in cols.items()}
    ids = c["id"]
    out = workload.output[ids]
    _, ttft, tpot, latency = request_latencies(c["entry"], c["first"], c["finish"], out)
    df = pl.DataFrame(
        {
            "request": ids.astype(np.int64),
            "arrival_s": c["arrival"],
            "sent_s": c["entry"],
            "first_token_s": c["first"],
            "finish_s": c["finish"],
            "prompt_tokens": workload.prompt[ids].astype(np.int64),
            "output_tokens": out.astype(np.int64),
            "replica": c["replica"],
            "pipeline_engine": c["stream"],
            "preemptions": c["pre"].astype(np.int64),
            "cached_prompt_tokens": c["hit"].astype(np.int64),
            "ttft_s": ttft,
            "tpot_s": tpot,
            "latency_s": latency,
        }
    )
    return df.with_columns(
        [pl.col(k).fill_nan(None) for k in ("ttft_s", "tpot_s", "latency_s")]
    ).sort("request")


def _stream_number(res: PlanResult, k: int) -> int:
    """Stream index (replica * pp + pipeline engine) of the k-th simulated stream: streams
    with no requests are not simulated, so count the non-empty ones of the full split."""
    return res.stream_numbers[k] if res.stream_numbers else k


def plot_cdfs(df: pl.DataFrame, path: Path, title: str) -> None:
    """Empirical CDFs of TTFT, TPOT and end-to-end latency (one panel each)."""
    plt = pyplot("--plot-cdf")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (col, name) in zip(
        axes,
        (("ttft_s", "TTFT (ms)"), ("tpot_s", "TPOT (ms)"), ("latency_s", "End-to-end latency (s)")),
        strict=True,
    ):
        v = np.sort(df[col].drop_nulls().to_numpy())
        scale = 1.0 if col == "latency_s" else 1e3
        if v.size:
            ax.step(v * scale, np.arange(1, v.size + 1) / v.size, where="post")
        ax.set_xlabel(name)
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=11)
    save_figure(fig, path, "--plot-cdf")

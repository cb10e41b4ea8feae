"""Signed errors of the published-measurement replay, per row and grouped.

Replays the rows of one engine profile (default `trtllm`) of
apex_fast/data/published_measurements.csv exactly as `apex.py validate` does
(apex_fast/validation/published.py, nothing fitted to them) and prints, for TTFT, ITL/TPOT and
output tokens/s, the signed relative error (predicted / measured - 1) of every row, then the
mean signed error, mean absolute error and row count grouped by engine version, GPU, model,
dtype, ISL/OSL, request rate or concurrency, and load (the offered rate against the predicted
throughput). A systematic cause shows as a group whose mean signed error is far from zero with a
small spread.

    python bench/published_residuals.py                      # trtllm, dense rows
    python bench/published_residuals.py --engine vllm-v1 --moe
    python bench/published_residuals.py --json out/trt_before.json   # keep the rows
    python bench/published_residuals.py --compare out/trt_before.json  # before/after per group
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from apex_fast.data import published_measurements
from apex_fast.validation.published import replay_row

METRICS = {
    "ttft": ("ttft_mean_ms", "ttft_median_ms"),
    "itl": ("itl_mean_ms", "tpot_mean_ms"),
    "tok_s": ("output_tok_s",),
}
GROUPS = ("version", "gpu", "model", "dtype", "isl_osl", "load", "rate", "client")


def _short_model(hf_id: str) -> str:
    return hf_id.split("/")[-1].replace("-Instruct", "")


def _load(src: dict, pred_tok_s: float | None) -> str:
    """Offered load: 'closed' for a concurrency cap, 'burst' for all at once, else the offered
    output-token rate as a fraction of the predicted output throughput (bucketed)."""
    if src["max_concurrency"]:
        return "closed-loop"
    rate = (src["request_rate"] or "inf").strip().lower()
    if rate in ("inf", ""):
        return "burst (all at t=0)"
    if not pred_tok_s or not src["output_len"]:
        return "poisson"
    frac = float(rate) * float(src["output_len"]) / pred_tok_s
    return "poisson <0.5 of capacity" if frac < 0.5 else "poisson >=0.5 of capacity"


def _client(src: dict) -> str:
    flags = (src["engine_flags"] or "") + " " + (src["notes"] or "")
    if "trtllm-bench" in flags:
        return "trtllm-bench (offline)"
    if "Triton" in flags:
        return "Triton (TensorRT engine)"
    if "NIM" in (src["engine_version"] or ""):
        return "NIM / AIPerf"
    if "vllm bench serve" in flags or "benchmark_serving" in flags:
        return "vLLM benchmark client"
    return "other"


def collect(engine: str, moe: bool) -> list[dict]:
    out = []
    for src in published_measurements(engine):
        r = replay_row(src)
        if "skipped" in r or (r.get("class") == "MoE") != moe:
            continue
        rec = {
            "version": src["engine_version"].split(" (")[0],
            "gpu": src["gpu"],
            "model": _short_model(src["model_hf_id"]),
            "dtype": f"w={src['weight_dtype'] or '-'} kv={src['kv_dtype'] or '-'}",
            "tp": int(src["tp"] or 1),
            "isl_osl": (
                f"{int(src['input_len'])}/{int(src['output_len'])}"
                if src["input_len"] is not None and src["output_len"] is not None
                else "dataset"
            ),
            "rate": (
                f"conc {int(src['max_concurrency'])}"
                if src["max_concurrency"]
                else f"rate {src['request_rate'] or 'inf'}"
            ),
            "client": _client(src),
        }
        pred_tok = r.get("output_tok_s_pred")
        rec["load"] = _load(src, pred_tok)
        for key, cols in METRICS.items():
            for c in cols:
                if f"{c}_err" in r:
                    rec[f"{key}_err"] = r[f"{c}_err"]
                    rec[f"{key}_meas"] = r[f"{c}_meas"]
                    rec[f"{key}_pred"] = r[f"{c}_pred"]
                    break
        out.append(rec)
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f}%"


def _stats(rows: list[dict], key: str) -> tuple[float, float, int]:
    e = np.array([r[f"{key}_err"] for r in rows if f"{key}_err" in r])
    if e.size == 0:
        return math.nan, math.nan, 0
    return float(e.mean()), float(np.abs(e).mean()), int(e.size)


def print_rows(rows: list[dict]) -> None:
    head = f"{'version':10} {'gpu':15} {'model':20} {'tp':>2} {'dtype':15} {'isl/osl':11} "
    head += f"{'rate':9} {'TTFT meas':>10} {'pred':>9} {'err':>8} {'ITL meas':>9} {'pred':>7} "
    head += f"{'err':>8} {'tok/s meas':>10} {'pred':>8} {'err':>8}"
    print(head)
    for r in rows:
        line = (
            f"{r['version'][:10]:10} {r['gpu'][:15]:15} {r['model'][:20]:20} {r['tp']:>2} "
            f"{r['dtype'][:15]:15} {r['isl_osl']:11} {r['rate']:9}"
        )
        for key, w in (("ttft", 10), ("itl", 9), ("tok_s", 10)):
            if f"{key}_err" in r:
                line += (
                    f" {r[f'{key}_meas']:>{w}.1f} {r[f'{key}_pred']:>{w - 1 if key != 'ttft' else 9}.1f}"
                    f" {_pct(r[f'{key}_err']):>8}"
                )
            else:
                line += f" {'-':>{w}} {'-':>{w - 1 if key != 'ttft' else 9}} {'-':>8}"
        print(line)


def print_groups(rows: list[dict], before: list[dict] | None = None) -> None:
    for g in ("all", *GROUPS):
        keys = sorted({r[g] for r in rows}) if g != "all" else ["all rows"]
        print(f"\nby {g}:")
        hdr = f"  {'':34} {'n':>4}"
        for key in METRICS:
            hdr += f" | {key + ' bias':>11} {key + ' MAE':>10}"
            if before is not None:
                hdr += f" {'(before)':>10}"
        print(hdr)
        for k in keys:
            sel = rows if g == "all" else [r for r in rows if r[g] == k]
            line = f"  {k[:34]:34} {len(sel):>4}"
            for key in METRICS:
                bias, mae, n = _stats(sel, key)
                line += f" | {_pct(bias):>11} {('-' if n == 0 else f'{100 * mae:.1f}%'):>10}"
                if before is not None:
                    old = before if g == "all" else [r for r in before if r[g] == k]
                    _, mae0, n0 = _stats(old, key)
                    line += f" {('-' if n0 == 0 else f'{100 * mae0:.1f}%'):>10}"
            print(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="trtllm")
    ap.add_argument("--moe", action="store_true", help="MoE rows instead of dense ones")
    ap.add_argument("--json", type=Path, help="write the per-row errors here")
    ap.add_argument("--compare", type=Path, help="per-row errors of an earlier run (--json)")
    ap.add_argument("--no-rows", action="store_true", help="groups only")
    a = ap.parse_args(argv)
    rows = collect(a.engine, a.moe)
    if not rows:
        print(f"error: no replayable {a.engine} rows", file=sys.stderr)
        return 2
    if not a.no_rows:
        print_rows(rows)
    before = json.loads(a.compare.read_text()) if a.compare else None
    print_groups(rows, before)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

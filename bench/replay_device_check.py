"""Replay published rows on the device they name and on another one, side by side.

A diagnostic for residuals that follow one lab's machine rather than one engine: when the rows
of a source are off by the same factor on every engine, replaying them on a device with other
peak rates shows whether that device's rates explain the gap. Nothing is changed in the data
or the model; the second column is a "what if", not a correction.

    python bench/replay_device_check.py --source gpustack --gpu H100-SXM-80GB --as H100-PCIe
    python bench/replay_device_check.py --source gpustack --gpu H100-SXM-80GB --as H100-PCIe \
        --engine vllm-v1

Prints, per row: engine profile, model, lengths and load, then the signed error (predicted /
measured - 1) of mean TTFT, mean ITL (or TPOT) and output tokens/s on the named device and on
the other one, and finally the mean absolute error of each column.
"""

from __future__ import annotations

import argparse
import math
import sys

from apex_fast.data import published_measurements
from apex_fast.validation.published import replay_row

# (label, measured columns in order of preference)
METRICS = (
    ("TTFT", ("ttft_mean_ms", "ttft_median_ms")),
    ("ITL", ("itl_mean_ms", "tpot_mean_ms")),
    ("tok/s", ("output_tok_s",)),
)


def _err(out: dict, cols: tuple[str, ...]) -> float | None:
    for c in cols:
        if f"{c}_err" in out:
            return float(out[f"{c}_err"])
    return None


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.0f}%"


def _shape(row: dict) -> str:
    if row["input_len"] is not None and row["output_len"] is not None:
        lens = f"{int(row['input_len'])}/{int(row['output_len'])}"
    else:
        lens = "dataset"
    load = f"c{int(row['max_concurrency'])}" if row["max_concurrency"] else "all at once"
    if row["request_rate"] and row["request_rate"].strip().lower() not in ("inf", ""):
        load = f"{row['request_rate']}/s"
    return f"{lens} {load}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True, help="substring of the rows' source_url")
    ap.add_argument("--gpu", required=True, help="the device the rows name")
    ap.add_argument("--as", dest="other", required=True, help="the device to replay them on")
    ap.add_argument("--engine", help="only rows of this engine profile")
    a = ap.parse_args(argv)
    rows = [
        r
        for r in published_measurements(a.engine)
        if a.source in r["source_url"] and r["gpu"] == a.gpu
    ]
    if not rows:
        print("error: no published row matches --source, --gpu and --engine", file=sys.stderr)
        return 2
    head = f"{'engine':8} {'model':18} {'lengths, load':22}"
    for dev in (a.gpu, a.other):
        head += " | " + " ".join(f"{m:>6}" for m, _ in METRICS) + f"  ({dev})"
    print(head)
    sums: dict[tuple[int, str], list[float]] = {}
    for r in rows:
        line = f"{r['engine_profile']:8} {r['model_hf_id'].split('/')[-1][:18]:18} "
        line += f"{_shape(r)[:22]:22}"
        for k, dev in enumerate((a.gpu, a.other)):
            out = replay_row({**r, "gpu": dev})
            if "skipped" in out:
                line += f" | {'skipped: ' + out['skipped']:>20}"
                continue
            errs = [_err(out, cols) for _, cols in METRICS]
            line += " | " + " ".join(f"{_fmt(e):>6}" for e in errs) + " " * (len(dev) + 4)
            for (m, _), e in zip(METRICS, errs, strict=True):
                if e is not None:
                    sums.setdefault((k, m), []).append(abs(e))
        print(line)
    line = f"{'mean absolute error':50}"
    for k in (0, 1):
        vals = [sums.get((k, m), []) for m, _ in METRICS]
        cells = [f"{100 * sum(v) / len(v):5.0f}%" if v else f"{'-':>6}" for v in vals]
        line += " | " + " ".join(cells) + " " * (len((a.gpu, a.other)[k]) + 4)
    print(line)
    return 0 if all(math.isfinite(sum(v)) for v in sums.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Decode-step terms of the cost model against published median inter-token latencies.

For each closed-loop published row of one engine, GPU and model (default: SGLang 0.5.6,
Llama-3.1-70B on 8x A100-SXM-80GB, the SGLang cookbook rows), prints the device-model terms of
one decode step at the row's concurrency (every client decoding) and at the decode-token-weighted
mean context of the replayed requests, next to the row's measured median ITL. The median ITL of
a closed loop is a decode step (prefill steps interrupt a few per cent of the gaps), so the
difference is what the decode step misses. Nothing is fitted here.

Terms (milliseconds per step, from apex_fast/sim/costs, the compiled step tables):
  gemm+attn  the "Attention" cell row (QKV and output GEMMs, attention launch per layer)
  ffn        gate/up and down GEMMs and the activation
  elem       norms, rotary and other elementwise kernels
  allreduce  the 2 x layers tensor-parallel all-reduces (custom all-reduce where it applies)
  lm+sample  LM head and sampling of the decoding sequences
  kv         KV-cache read: c_ctx x batch x mean context
  host       the engine's exposed host time per step

With --vidur, the measured per-layer GEMM medians of Vidur's A100 profile for the same shapes
(../shared/reference/vidur/compute/a100/meta-llama/Meta-Llama-3-70B/mlp.csv, TP 8) are printed
for the GEMM part, to separate the GEMM model from the rest.

    python bench/decode_step_terms.py
    python bench/decode_step_terms.py --vidur /work/shared/reference/vidur
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from apex_fast.data import published_measurements
from apex_fast.errors import ApexError
from apex_fast.hardware.devices import get_device
from apex_fast.profiles import analytic
from apex_fast.sim.engine import costs_for_options
from apex_fast.validation.published import _workload, row_model, row_plan

VIDUR_MODEL = "compute/a100/meta-llama/Meta-Llama-3-70B/mlp.csv"
VIDUR_GEMMS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")


def mean_decode_context(prompt: np.ndarray, output: np.ndarray) -> float:
    """Mean context of a decode token: each request decodes output tokens at contexts
    prompt + 1 .. prompt + output, so the token-weighted mean is
    sum(o (p + (o + 1) / 2)) / sum(o)."""
    p = prompt.astype(np.float64)
    o = output.astype(np.float64)
    return float(np.sum(o * (p + (o + 1.0) / 2.0)) / np.sum(o))


def vidur_gemm_ms(root: Path, tokens: int, layers: int) -> float | None:
    """Vidur's measured four GEMMs of one Llama-3-70B layer at TP 8 (median), x layers, for the
    nearest profiled token count at or above `tokens`."""
    path = root / VIDUR_MODEL
    if not path.exists():
        return None
    rows = [
        r
        for r in csv.DictReader(path.open())
        if r["num_tensor_parallel_workers"].strip() == "8" and int(r["num_tokens"]) >= tokens
    ]
    if not rows:
        return None
    row = min(rows, key=lambda r: int(r["num_tokens"]))
    per_layer = sum(float(row[f"time_stats.{op}.median"]) for op in VIDUR_GEMMS)
    return per_layer * layers


TERMS = ("gemm+attn", "ffn", "elem", "allreduce", "lm+sample", "kv", "host")
_CELL_OF = {
    "gemm+attn": "Attention",
    "ffn": "SwiGLU",
    "elem": "Norms & elementwise",
    "allreduce": "AllReduce",
}


def step_terms(row: dict, vidur: Path | None = None) -> dict | None:
    """The cost model's decode-step terms (ms) of a closed-loop row at its concurrency and mean
    decode context, with `model` their sum and `meas` the row's median ITL; None when the row
    cannot be replayed."""
    model = row_model(row["model_hf_id"])
    device = get_device(row["gpu"])
    built = row_plan(row, model, device)
    wl = _workload(row)
    if isinstance(built, str) or isinstance(wl, str):
        return None
    cluster, plan, opts = built
    batch = int(row["max_concurrency"])
    ctx = mean_decode_context(wl[0].prompt, wl[0].output)
    cc = costs_for_options(model, cluster, plan, batch, batch, opts)
    tok = {k: float(v[batch]) * 1e3 for k, v in cc.tok_ops.items()}
    out: dict = {"lengths": f"{row['input_len']:.0f}/{row['output_len']:.0f}"}
    out.update(batch=batch, ctx=ctx)
    for name, cell in _CELL_OF.items():
        out[name] = tok.pop(cell, 0.0)
    out["other"] = sum(tok.values())  # any further per-token rows (none for a dense model)
    out["lm+sample"] = sum(float(v[batch]) for v in cc.seq_ops.values()) * 1e3
    out["kv"] = cc.costs.c_ctx * batch * ctx * 1e3
    out["host"] = cc.costs.overhead * 1e3
    out["model"] = sum(out[t] for t in TERMS) + out["other"]
    out["meas"] = float(row["itl_median_ms"])
    if vidur is not None:
        # the four GEMMs alone (the cell rows also hold attention launch and activation)
        layers = plan.pp * max(plan.layers_per_stage)
        dmod = analytic.device_model(device)
        h, hd = model.hidden_size, model.head_dim
        q, kvh = model.num_heads // plan.tp, max(model.num_kv_heads // plan.tp, 1)
        inter = model.intermediate_size // plan.tp
        shapes = ((hd * (q + 2 * kvh), h), (h, hd * q), (2 * inter, h), (h, inter))
        g = sum(float(analytic.gemm_time(dmod, m, k, batch, 2.0, 2.0, "half")) for m, k in shapes)
        out["gemm_model"] = g * layers * 1e3
        out["gemm_vidur"] = vidur_gemm_ms(vidur, batch, layers)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default="sglang")
    ap.add_argument("--gpu", default="A100-SXM-80GB")
    ap.add_argument("--model", default="Llama-3.1-70B", help="substring of the model id")
    ap.add_argument("--vidur", type=Path, default=None, help="Vidur reference directory")
    args = ap.parse_args(argv)
    try:
        published = published_measurements(args.engine)
    except ApexError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [
        r
        for r in published
        if r["gpu"] == args.gpu
        and args.model in r["model_hf_id"]
        and r["max_concurrency"]
        and r["itl_median_ms"]
    ]
    if not rows:
        print(
            f"error: no closed-loop {args.engine} rows of {args.model} on {args.gpu} "
            "with a median ITL",
            file=sys.stderr,
        )
        return 2
    head = f"{'isl/osl':>9} {'conc':>4} {'ctx':>5} | " + " ".join(f"{t:>9}" for t in TERMS)
    head += f" | {'model':>6} {'meas':>6} {'miss':>6}"
    if args.vidur:
        head += f" | {'gemm model':>10} {'gemm Vidur':>10}"
    print(head)
    for row in rows:
        t = step_terms(row, args.vidur)
        if t is None:
            continue
        line = f"{t['lengths']:>9} {t['batch']:>4} {t['ctx']:>5.0f} | "
        line += " ".join(f"{t[k]:>9.2f}" for k in TERMS)
        line += f" | {t['model']:>6.2f} {t['meas']:>6.2f} {t['meas'] - t['model']:>+6.2f}"
        if args.vidur:
            vid = t["gemm_vidur"]
            line += f" | {t['gemm_model']:>10.2f} " + (
                f"{vid:>10.2f}" if vid is not None else f"{'-':>10}"
            )
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

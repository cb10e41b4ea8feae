"""Replay the measured serving runs and report prediction errors (`apex.py validate`, whose
command is apex_fast/cli/validate.py).

Each bundled run (apex_fast/validation/data, written from real vLLM 0.6.0 measurements on 8x
H100) is one server serving its own trace with the engine's real per-request lengths. It is
simulated twice: with the host parameters the tool uses (fitted jointly on every family:
in-sample) and with the parameters fitted WITHOUT its model family (leave-one-family-out: out of
sample). Method and tables: docs/validation.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from apex_fast.sim.step_time import HostParams, fit_data, host_params
from apex_fast.validation.fit import METRICS, errors
from apex_fast.validation.replay import prepare
from apex_fast.validation.runs import Run

DEFAULT_REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
_SHORT = {"ttft_s": "ttft", "itl_s": "itl", "latency_s": "latency"}


def lofo_params(family: str) -> HostParams | None:
    """Host parameters fitted without `family` (None if the fit file has none)."""
    entry = fit_data().get("leave_one_family_out", {}).get(family)
    if entry is None:
        return None
    return HostParams.from_params(entry["params"], f"fitted on {', '.join(entry['fitted_on'])}")


def validate_runs(runs: list[Run]) -> list[dict]:
    """One row per run: measured, in-sample and out-of-sample predictions and errors."""
    preps = [prepare(r) for r in runs]
    out: list[dict] = []
    inside = errors(preps, None)
    outside: dict[int, dict] = {}
    for fam in sorted({r.family for r in runs}):
        h = lofo_params(fam)
        if h is None:
            continue
        sub = [p for p in preps if p.run.family == fam]
        for p, row in zip(sub, errors(sub, h), strict=True):
            outside[p.run.run_id] = row
    for row in inside:
        run: Run = row["run"]
        rec = {
            "run": run.label,
            "family": run.family,
            "engine": run.engine,
            "tp": run.tp,
            "chunked": run.chunked,
            "requests": run.workload.num_requests,
            "kv_tokens": row["kv_tokens"],
            "preemptions": row["preemptions"],
        }
        for k in METRICS:
            s = _SHORT[k]
            rec[f"{s}_meas_s"] = getattr(run, k)
            rec[f"{s}_pred_s"] = row[f"{k}_pred"]
            rec[f"{s}_err"] = row[f"{k}_err"]
            o = outside.get(run.run_id)
            rec[f"{s}_lofo_pred_s"] = o[f"{k}_pred"] if o else None
            rec[f"{s}_lofo_err"] = o[f"{k}_err"] if o else None
        out.append(rec)
    return out


def summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean absolute errors per family, in-sample and leave-one-family-out."""
    res: dict[str, dict[str, float]] = {}
    for fam in sorted({r["family"] for r in rows}):
        rs = [r for r in rows if r["family"] == fam]
        d: dict[str, float] = {"runs": float(len(rs))}
        for s in _SHORT.values():
            d[s] = float(np.mean([abs(r[f"{s}_err"]) for r in rs]))
            lo = [abs(r[f"{s}_lofo_err"]) for r in rs if r[f"{s}_lofo_err"] is not None]
            d[f"{s}_lofo"] = float(np.mean(lo)) if lo else float("nan")
        res[fam] = d
    return res


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def render(rows: list[dict], summ: dict[str, dict[str, float]]) -> str:
    from apex_fast.report.text import table

    out = []
    for fam in summ:
        out.append(f"== {fam}")
        body = []
        for r in (r for r in rows if r["family"] == fam):
            body.append(
                [
                    r["run"],
                    f"{r['ttft_meas_s'] * 1e3:.1f}",
                    f"{r['ttft_pred_s'] * 1e3:.1f}",
                    _pct(r["ttft_err"]),
                    _pct(r["ttft_lofo_err"]),
                    f"{r['itl_meas_s'] * 1e3:.2f}",
                    f"{r['itl_pred_s'] * 1e3:.2f}",
                    _pct(r["itl_err"]),
                    _pct(r["itl_lofo_err"]),
                    f"{r['latency_meas_s']:.2f}",
                    _pct(r["latency_err"]),
                    _pct(r["latency_lofo_err"]),
                ]
            )
        head = ["Run", "TTFT ms", "pred", "err", "LOFO"]
        head += ["ITL ms", "pred", "err", "LOFO", "Lat s", "err", "LOFO"]
        out.append(table(head, body))
    out.append("")
    out.append("Mean absolute error (in-sample: joint fit | LOFO: fitted without the family)")
    for fam, d in summ.items():
        out.append(
            f"  {fam:12s} {int(d['runs']):3d} runs  "
            f"TTFT {100 * d['ttft']:.1f}% | {100 * d['ttft_lofo']:.1f}%   "
            f"ITL {100 * d['itl']:.1f}% | {100 * d['itl_lofo']:.1f}%   "
            f"latency {100 * d['latency']:.1f}% | {100 * d['latency_lofo']:.1f}%"
        )
    h = host_params()
    out.append(
        f"Host parameters (vllm-0.6): step {h.host_step_s * 1e3:.2f} ms, in-process front end "
        f"{h.host_frontend_seq_s * 1e6:.0f} us/sequence, engine {h.host_engine_seq_s * 1e6:.0f} "
        f"us/sequence, {h.host_op_s * 1e6:.1f} us per eager kernel launch ({h.source})"
    )
    return "\n".join(out)

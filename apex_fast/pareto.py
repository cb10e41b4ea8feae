"""Pareto front of the evaluated plans over (TTFT, TPOT, throughput, energy, cost).

A plan is dominated when another plan is at least as good in every objective and strictly better
in one (TTFT, TPOT, energy per token and cost per token: lower is better; throughput: higher is
better). `write_pareto_csv` writes the non-dominated plans; `plot_pareto` draws every feasible
plan and highlights the front (matplotlib, the optional `plot` extra).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apex_fast.errors import ApexError
from apex_fast.metrics.energy import gpu_seconds_per_token
from apex_fast.plotting import pyplot, save_figure
from apex_fast.search import Evaluated

# (column, label, sign): sign +1 = lower is better, -1 = higher is better
OBJECTIVE_COLUMNS = (
    ("ttft_ms", "Mean TTFT (ms)", 1.0),
    ("tpot_ms", "Mean TPOT (ms)", 1.0),
    ("throughput_tok_s", "Throughput (generated tokens/s)", -1.0),
    ("energy_j_per_token", "Energy (J per generated token)", 1.0),
    ("gpu_s_per_token", "Cost (GPU-seconds per token)", 1.0),
)


@dataclass(frozen=True)
class ParetoPoint:
    label: str
    values: dict[str, float]
    pareto: bool


def plan_values(e: Evaluated) -> dict[str, float]:
    m = e.metrics
    assert m is not None
    return {
        "ttft_ms": m.ttft_mean_s * 1e3,
        "tpot_ms": m.tpot_mean_s * 1e3,
        "throughput_tok_s": m.throughput_tokens_per_s,
        "energy_j_per_token": m.energy_j_per_token,
        "gpu_s_per_token": gpu_seconds_per_token(m),
    }


def nondominated(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `points` (all objectives minimised).
    Rows with NaN are treated as worst in that objective."""
    x = np.where(np.isnan(points), np.inf, points)
    n = x.shape[0]
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        le = np.all(x <= x[i], axis=1)
        lt = np.any(x < x[i], axis=1)
        if np.any(le & lt):
            keep[i] = False
    return keep


def pareto_points(evaluated: list[Evaluated]) -> list[ParetoPoint]:
    vals = [plan_values(e) for e in evaluated]
    if not vals:
        return []
    mat = np.array(
        [[sign * v[col] for col, _, sign in OBJECTIVE_COLUMNS] for v in vals], dtype=np.float64
    )
    mask = nondominated(mat)
    return [
        ParetoPoint(e.result.plan.label, v, bool(k))
        for e, v, k in zip(evaluated, vals, mask, strict=True)
    ]


def write_pareto_csv(
    evaluated: list[Evaluated], path: str | Path, gpu_hour_cost: float = 0.0
) -> list[ParetoPoint]:
    """Write the non-dominated plans (best TPOT first) to a CSV; return all points."""
    pts = pareto_points(evaluated)
    by_label = {e.result.plan.label: e for e in evaluated}
    front = sorted((p for p in pts if p.pareto), key=lambda p: p.values["tpot_ms"])
    cols = [c for c, _, _ in OBJECTIVE_COLUMNS]
    header = ["plan", "dp", "pp", "tp", "ep", *cols, "energy_kj", "usd_per_mtok"]
    p = Path(path)
    try:
        with p.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for pt in front:
                e = by_label[pt.label]
                pl = e.result.plan
                m = e.metrics
                assert m is not None
                usd = gpu_hour_cost * pt.values["gpu_s_per_token"] / 3600.0 * 1e6
                w.writerow(
                    [pt.label, pl.dp, pl.pp, pl.tp, pl.ep]
                    + [_num(pt.values[c]) for c in cols]
                    + [_num(m.energy_kj), _num(usd) if gpu_hour_cost > 0 else ""]
                )
    except OSError as err:
        raise ApexError(f"cannot write --pareto file {p}: {err.strerror}") from None
    return pts


def _num(x: float) -> str:
    return "" if not math.isfinite(x) else f"{x:.6g}"


def plot_pareto(
    evaluated: list[Evaluated], path: str | Path, title: str = "", best_label: str | None = None
) -> None:
    """Two panels: TPOT vs energy per token, and throughput vs TTFT; Pareto plans highlighted."""
    plt = pyplot("--plot")
    pts = pareto_points(evaluated)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), constrained_layout=True)
    panels = (
        ("tpot_ms", "energy_j_per_token"),
        ("ttft_ms", "throughput_tok_s"),
    )
    labels = {c: lab for c, lab, _ in OBJECTIVE_COLUMNS}
    for ax, (xc, yc) in zip(axes, panels, strict=True):
        for on_front in (False, True):
            sel = [p for p in pts if p.pareto == on_front]
            if not sel:
                continue
            ax.scatter(
                [p.values[xc] for p in sel],
                [p.values[yc] for p in sel],
                s=70 if on_front else 35,
                c="tab:red" if on_front else "tab:gray",
                alpha=0.9 if on_front else 0.6,
                edgecolors="black" if on_front else "none",
                label="Pareto-optimal (5 objectives)" if on_front else "dominated",
                zorder=3 if on_front else 2,
            )
        placed: list[tuple[float, float]] = []
        # name only the Pareto-optimal plans (and the chosen one): with dozens of plans, labels on
        # the dominated ones bury the front; their names are in the --pareto CSV
        named = [p for p in pts if p.pareto or p.label == best_label] or pts
        groups = _label_groups(named, xc, yc)
        spans = [_span([g[0][0] for g in groups]), _span([g[0][1] for g in groups])]
        for (x, y), group in groups:
            text = "\n".join(p.label + (" *" if p.label == best_label else "") for p in group)
            # labels of neighbouring points alternate above and below their marker
            near = sum(
                abs(x - px) < 0.15 * spans[0] and abs(y - py) < 0.08 * spans[1] for px, py in placed
            )
            placed.append((x, y))
            ax.annotate(
                text,
                (x, y),
                textcoords="offset points",
                xytext=(6, 4 if near % 2 == 0 else -10 - 10 * len(group)),
                fontsize=8,
                va="bottom",
                color="black" if any(p.pareto for p in group) else "dimgray",
            )
        xs = [p.values[xc] for p in pts if math.isfinite(p.values[xc]) and p.values[xc] > 0]
        if xs and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(labels[xc])
        ax.set_ylabel(labels[yc])
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=9)
    axes[0].set_title("Energy vs per-token latency (lower-left is better)")
    axes[1].set_title("Throughput vs time to first token (upper-left is better)")
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path, "--plot")


def _label_groups(
    pts: list[ParetoPoint], xc: str, yc: str, tol: float = 0.06
) -> list[tuple[tuple[float, float], list[ParetoPoint]]]:
    """Points closer than `tol` of the axis span in both coordinates share one label (so plans
    with near-identical metrics do not print on top of each other)."""
    ok = [p for p in pts if math.isfinite(p.values[xc]) and math.isfinite(p.values[yc])]
    if not ok:
        return []
    xs = np.array([p.values[xc] for p in ok])
    ys = np.array([p.values[yc] for p in ok])
    dx = max(float(np.ptp(xs)), 1e-12) * tol
    dy = max(float(np.ptp(ys)), 1e-12) * tol
    groups: list[tuple[tuple[float, float], list[ParetoPoint]]] = []
    for p, x, y in zip(ok, xs, ys, strict=True):
        for (gx, gy), members in groups:
            if abs(x - gx) <= dx and abs(y - gy) <= dy:
                members.append(p)
                break
        else:
            groups.append(((float(x), float(y)), [p]))
    return groups


def _span(v: list[float]) -> float:
    return (max(v) - min(v)) or 1.0 if v else 1.0

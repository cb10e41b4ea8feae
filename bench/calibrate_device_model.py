"""Fit the analytic device model to real measurements and report its error.

    PYTHONPATH=. python bench/calibrate_device_model.py [--reference ../shared/reference] [--write]

Data (read-only, never copied into the repo):
  GEMMs        vidur/compute/{h100,a100}/*/mlp.csv (attn_pre_proj, attn_post_proj, mlp_up_proj,
               mlp_down_proj; median ms), profiles/comp/V100-PCIE-16GB/gemm_0.csv (us)
  elementwise  vidur mlp.csv: input_layernorm, mlp_act, add, attn_rope
  collectives  profiles/comm/<gpu>/*.csv (size KiB, us), vidur/network/{h100,a100}_dgx/*.csv
Fit: Nelder-Mead on the mean |log(predicted / measured)| per device and op group, parameters
in log / logit space. Skinny GEMMs (2 <= n < 128 tokens): where their median memory efficiency
falls well below the fitted eta_mem (V100), it is measured and added as eta_mem_skinny, and the
GEMM error table is that of the model with the term, as shipped. --write stores the fitted
values in profile_data/calibration.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from apex_fast.hardware.devices import PROFILE_DATA_DIR, get_device
from apex_fast.profiles.analytic import (
    SKINNY_MAX_N,
    DeviceModel,
    collective_time,
    gemm_time,
    mem_time,
)
from apex_fast.profiles.calibration import GROUPS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REF = ROOT.parent / "shared" / "reference"
VIDUR_GPU = {"h100": "H100-SXM-80GB", "a100": "A100-SXM-80GB"}
GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
# "add" is left out: the Sarathi residual add reads 1 us at one token, below any kernel launch
# (it is fused or timed without its launch), so it does not follow the elementwise model.
ELEM_OPS = ("input_layernorm", "mlp_act", "attn_rope")
KIND = {"all_reduce": "all_reduce", "send_recv": "sendrecv"}


# ----------------------------------------------------------------------------- data
@dataclass
class GemmData:
    op: np.ndarray
    m: np.ndarray
    k: np.ndarray
    n: np.ndarray
    t: np.ndarray  # seconds


@dataclass
class ElemData:
    op: np.ndarray
    nbytes: np.ndarray
    t: np.ndarray


@dataclass
class CommData:
    kind: np.ndarray
    group: np.ndarray
    inter: np.ndarray
    nbytes: np.ndarray
    t: np.ndarray
    source: np.ndarray


@dataclass
class VidurRows:
    """The rows of one Vidur mlp.csv: each a layer shape at a TP degree and a token count."""

    frame: pl.DataFrame
    tp: np.ndarray
    n: np.ndarray  # tokens
    h: np.ndarray
    nh: np.ndarray
    nkv: np.ndarray
    inter: np.ndarray
    gated: np.ndarray

    @property
    def hd(self) -> np.ndarray:
        return self.h / self.nh

    def op_times(self, op: str) -> tuple[np.ndarray, np.ndarray]:
        """Seconds of one op per row (median), and the rows where it was measured."""
        t = self.frame[f"time_stats.{op}.median"].to_numpy() * 1e-3
        return t, np.isfinite(t) & (t > 0)


def _vidur_rows(ref: Path, dev: str) -> list[VidurRows]:
    out = []
    for f in sorted(glob.glob(str(ref / "vidur/compute" / dev / "*/*/mlp.csv"))):
        d = pl.read_csv(f)
        cols = ("num_tensor_parallel_workers", "num_tokens", "n_embd", "n_head", "n_kv_head")
        num = [d[c].to_numpy().astype(float) for c in (*cols, "n_expanded_embd")]
        out.append(VidurRows(d, *num, d["use_gated_mlp"].to_numpy().astype(bool)))
    return out


def load_gemms(ref: Path) -> dict[str, GemmData]:
    out: dict[str, GemmData] = {}
    for dev, name in VIDUR_GPU.items():
        ops, ms, ks, ns, ts = [], [], [], [], []
        for r in _vidur_rows(ref, dev):
            q_local = r.nh / r.tp * r.hd
            kv_local = np.maximum(r.nkv / r.tp, 1.0) * r.hd
            shapes = {
                "attn_pre_proj": (q_local + 2 * kv_local, r.h),
                "attn_post_proj": (r.h, q_local),
                "mlp_up_proj": (np.where(r.gated, 2.0, 1.0) * r.inter / r.tp, r.h),
                "mlp_down_proj": (r.h, r.inter / r.tp),
            }
            for op, (m, k) in shapes.items():
                t, ok = r.op_times(op)
                ops.append(np.full(ok.sum(), op))
                ms.append(m[ok])
                ks.append(k[ok])
                ns.append(r.n[ok])
                ts.append(t[ok])
        out[name] = GemmData(*(np.concatenate(a) for a in (ops, ms, ks, ns, ts)))
    v = pl.read_csv(ref / "profiles/comp/V100-PCIE-16GB/gemm_0.csv").filter(
        pl.col("dtype") == "half"
    )
    out["V100-PCIE-16GB"] = GemmData(
        np.full(v.height, "gemm_0.csv"),
        v["m"].to_numpy().astype(float),
        v["k"].to_numpy().astype(float),
        v["n"].to_numpy().astype(float),
        v["time(us)"].to_numpy() * 1e-6,
    )
    return out


def load_elementwise(ref: Path) -> dict[str, ElemData]:
    """Bytes moved (bf16): norm 2 (read+write) x h, residual add 3 x h, gated act 3 x I/tp."""
    out: dict[str, ElemData] = {}
    for dev, name in VIDUR_GPU.items():
        ops, bs, ts = [], [], []
        for r in _vidur_rows(ref, dev):
            nbytes = {
                "input_layernorm": 2 * r.h * r.n * 2,
                "mlp_act": np.where(r.gated, 3.0, 2.0) * r.inter / r.tp * r.n * 2,
                "attn_rope": 2 * (r.nh / r.tp + np.maximum(r.nkv / r.tp, 1.0)) * r.hd * r.n * 2,
            }
            for op, b in nbytes.items():
                t, ok = r.op_times(op)
                ops.append(np.full(ok.sum(), op))
                bs.append(b[ok])
                ts.append(t[ok])
        out[name] = ElemData(*(np.concatenate(a) for a in (ops, bs, ts)))
    return out


def load_comms(ref: Path) -> dict[str, CommData]:
    rows: dict[str, list[tuple]] = {}
    for f in sorted(glob.glob(str(ref / "profiles/comm/*/*.csv"))):
        # drop empty messages and a block of malformed V100 rows (sizes in the GPU-count column)
        d = pl.read_csv(f).filter((pl.col("size(kb)") > 0) & (pl.col("num_gpus_per_node") <= 16))
        kind = Path(f).stem
        for gpu, nodes, gpn, size_kb, t_us in d.select(
            ["gpu", "num_nodes", "num_gpus_per_node", "size(kb)", "time(us)"]
        ).iter_rows():
            rows.setdefault(get_device(gpu).name, []).append(
                (kind, nodes * gpn, nodes > 1, size_kb * 1024.0, t_us * 1e-6, "apex")
            )
    for f in sorted(glob.glob(str(ref / "vidur/network/*_dgx/*.csv"))):
        dev = VIDUR_GPU[Path(f).parent.name.split("_")[0]]
        d = pl.read_csv(f)
        kind = KIND[Path(f).stem]
        # keep ~8 sizes per octave: the files sample sizes linearly (994 per config)
        d = d.with_columns(bin=(pl.col("size").log(2) * 8).round()).unique(
            ["num_workers", "devices_per_node", "bin"], keep="first", maintain_order=True
        )
        for w, dpn, size, t_ms in d.select(
            ["num_workers", "devices_per_node", "size", f"time_stats.{Path(f).stem}.median"]
        ).iter_rows():
            rows.setdefault(dev, []).append((kind, w, w > dpn, float(size), t_ms * 1e-3, "vidur"))
    out = {}
    for dev, r in rows.items():
        cols = list(zip(*r, strict=True))
        out[dev] = CommData(*(np.asarray(c) for c in cols))
    return out


# ----------------------------------------------------------------------------- fit
# parameter -> (initial value, transform) ; "log": positive, "logit": in (0, 1)
SPACE: dict[str, tuple[float, str]] = {
    "eta_max": (0.7, "logit"),
    "sat_mn": (16.0, "log"),
    "sat_k": (64.0, "log"),
    "eta_mem": (0.85, "logit"),
    "t_launch": (6e-6, "log"),
    "eta_elem": (0.6, "logit"),
    "t_launch_elem": (5e-6, "log"),
    "alpha_intra": (1e-5, "log"),
    "alpha_inter": (2e-5, "log"),
    "alpha_log2": (1e-6, "log"),
    "alpha_log2_inter": (1e-5, "log"),
    "busbw_eff_intra": (0.8, "logit"),
    "busbw_eff_inter": (0.8, "logit"),
    "group_half": (0.5, "log"),
    "msg_half_bytes": (2e6, "log"),
    "msg_half_bytes_inter": (2e6, "log"),
    "msg_ramp_pow": (0.7, "log"),
    "eff_all_gather": (0.8, "log"),
    "eff_reduce_scatter": (0.8, "log"),
    "eff_alltoall": (0.8, "log"),
    "eff_sendrecv": (1.0, "log"),
}


def _to_x(name: str, v: float) -> float:
    return float(np.log(v / (1 - v)) if SPACE[name][1] == "logit" else np.log(v))


def _from_x(name: str, x: float) -> float:
    return float(1 / (1 + np.exp(-x)) if SPACE[name][1] == "logit" else np.exp(x))


def nelder_mead(f, x0: np.ndarray, iters: int = 3000, step: float = 0.5, tol: float = 1e-7):
    n = len(x0)
    pts = [x0] + [x0 + step * np.eye(n)[i] for i in range(n)]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = np.argsort(vals)
        pts = [pts[i] for i in order]
        vals = [vals[i] for i in order]
        if abs(vals[-1] - vals[0]) < tol:
            break
        c = np.mean(pts[:-1], axis=0)
        xr = c + (c - pts[-1])
        fr = f(xr)
        if fr < vals[0]:
            xe = c + 2 * (c - pts[-1])
            fe = f(xe)
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = c + 0.5 * (pts[-1] - c)
            fc = f(xc)
            if fc < vals[-1]:
                pts[-1], vals[-1] = xc, fc
            else:
                pts = [pts[0]] + [pts[0] + 0.5 * (p - pts[0]) for p in pts[1:]]
                vals = [vals[0]] + [f(p) for p in pts[1:]]
    i = int(np.argmin(vals))
    return pts[i], vals[i]


def fit(base: DeviceModel, names: list[str], predict, measured: np.ndarray, restarts: int = 3):
    """Minimise mean |log(pred/meas)| over the named parameters; returns the fitted dict."""
    x = np.array([_to_x(nm, getattr(base, nm)) for nm in names])

    def loss(xv: np.ndarray) -> float:
        params = {nm: _from_x(nm, xi) for nm, xi in zip(names, xv, strict=True)}
        pred = predict(DeviceModel(**{**base.__dict__, **params}))
        with np.errstate(all="ignore"):
            r = np.abs(np.log(pred / measured))
        return float(np.mean(r)) if np.all(np.isfinite(r)) else 1e9

    best = loss(x)
    for _ in range(restarts):  # restart from the best point to escape a collapsed simplex
        x, best = nelder_mead(loss, x)
    return {nm: _from_x(nm, xi) for nm, xi in zip(names, x, strict=True)}, best


def initial_model(device: str) -> DeviceModel:
    dev = get_device(device)
    params = {nm: v for nm, (v, _) in SPACE.items()}
    return DeviceModel(
        device=dev, clock_mhz=dev.boost_clock_mhz, eta_attn=0.4, t_launch_attn=1e-5, **params
    )


def predict_gemm(g: GemmData):
    return lambda dm: gemm_time(dm, g.m, g.k, g.n, 2.0, 2.0, "half")


def predict_elem(e: ElemData):
    return lambda dm: mem_time(dm, e.nbytes)


def predict_comm(c: CommData):
    def run(dm: DeviceModel) -> np.ndarray:
        out = np.empty(len(c.t))
        for key in set(zip(c.kind, c.group, c.inter, strict=True)):
            sel = (c.kind == key[0]) & (c.group == key[1]) & (c.inter == key[2])
            out[sel] = collective_time(dm, key[0], c.nbytes[sel], int(key[1]), bool(key[2]))
        return out

    return run


def rel_err_table(dev: str, label: np.ndarray, pred: np.ndarray, meas: np.ndarray) -> list[dict]:
    rows = []
    err = np.abs(pred - meas) / meas
    for op in sorted(set(label)):
        sel = label == op
        rows.append(
            {
                "device": dev,
                "op": str(op),
                "n": int(sel.sum()),
                "median": float(np.median(err[sel])),
                "p90": float(np.quantile(err[sel], 0.9)),
            }
        )
    return rows


GEMM_NAMES = ["eta_max", "sat_mn", "sat_k", "eta_mem", "t_launch"]
ELEM_NAMES = ["eta_elem", "t_launch_elem"]


def comm_names_for(c: CommData) -> list[str]:
    names = ["alpha_intra", "alpha_log2", "busbw_eff_intra", "group_half", "msg_half_bytes"]
    names.append("msg_ramp_pow")
    if c.inter.any():
        names += ["alpha_inter", "alpha_log2_inter", "busbw_eff_inter", "msg_half_bytes_inter"]
    for kind in ("all_gather", "reduce_scatter", "alltoall", "sendrecv"):
        if (c.kind == kind).any():
            names.append(f"eff_{kind}")
    return names


def _fit_group(dev: str, dm: DeviceModel, names: list[str], predict, meas, label, group: str):
    """Fit one parameter group on top of `dm`; the fitted values, the new model, its table rows."""
    p, _ = fit(dm, names, predict, meas)
    dm = DeviceModel(**{**dm.__dict__, **p})
    pred = predict(dm)
    return p, dm, [*rel_err_table(dev, label, pred, meas), summary_rows(dev, group, pred, meas)]


# Skinny GEMMs: 2 <= n < SKINNY_MAX_N tokens. Their memory efficiency is measured, not fitted: the
# median of (bytes moved) / (HBM bandwidth x (time - launch)) over the GEMMs whose weights are
# large enough (m*k >= 4096^2, >= 32 MiB in half) that streaming them dominates the time.
SKINNY_MIN_WEIGHTS = 4096**2
# A device gets the skinny term when that median is below this share of its fitted eta_mem: a
# regime the global fit cannot absorb. Measured: V100 0.50 of eta_mem, H100 0.98, A100 0.95, so
# any cut between those picks the same devices.
SKINNY_DROP = 0.75
GEMM_SOURCE_FILE = {"V100-PCIE-16GB": "gemm_0.csv"}


@dataclass
class Skinny:
    eta: float  # the median efficiency, to two decimals (the value eta_mem_skinny takes)
    count: int
    even: float  # medians over even n, odd n, and n = 1
    odd: float
    n1: float
    ratio: float  # median / eta_mem

    @property
    def applies(self) -> bool:
        return self.ratio < SKINNY_DROP


def skinny_efficiency(g: GemmData, dm: DeviceModel) -> Skinny:
    nbytes = g.m * g.k * 2.0 + (g.k * g.n + g.m * g.n) * 2.0
    with np.errstate(all="ignore"):
        eff = nbytes / (dm.mem_bw * (g.t - dm.t_launch))
    big = g.m * g.k >= SKINNY_MIN_WEIGHTS
    sk = big & (g.n >= 2) & (g.n < SKINNY_MAX_N)

    def med(sel: np.ndarray) -> float:
        return float(np.median(eff[sel])) if sel.any() else math.nan

    eta = med(sk)
    even, odd = med(sk & (g.n % 2 == 0)), med(sk & (g.n % 2 == 1))
    return Skinny(round(eta, 2), int(sk.sum()), even, odd, med(big & (g.n == 1)), eta / dm.eta_mem)


def skinny_note(dev: str, sk: Skinny, others: dict[str, Skinny]) -> str:
    rest = ", ".join(f"{d} {o.ratio:.2f}" for d, o in sorted(others.items()) if not o.applies)
    return (
        f"measured: median memory efficiency of the {sk.count:,} half GEMMs with m*k >= 4096^2 "
        f"and 2 <= n < {SKINNY_MAX_N} in {GEMM_SOURCE_FILE.get(dev, 'the table')} is {sk.eta:.2f} "
        f"(even n {sk.even:.2f}, odd n {sk.odd:.2f}; n = 1 runs at {sk.n1:.2f}), "
        f"{sk.ratio:.2f} of eta_mem. "
        f"Others keep most of eta_mem there ({rest} of it), so they use eta_mem"
    )


def calibrate(ref: Path) -> tuple[dict[str, dict[str, float]], list[dict], dict[str, str]]:
    """Fitted parameters per device, the error table, and the notes of measured skinny terms."""
    gemms, elems, comms = load_gemms(ref), load_elementwise(ref), load_comms(ref)
    fitted: dict[str, dict[str, float]] = {}
    table: list[dict] = []
    skinny: dict[str, Skinny] = {}
    for dev in sorted(set(gemms) | set(comms)):
        dm = initial_model(dev)
        res: dict[str, float] = {}
        if dev in gemms:
            g = gemms[dev]
            p, dm, _ = _fit_group(dev, dm, GEMM_NAMES, predict_gemm(g), g.t, g.op, "GEMM")
            res |= p
            skinny[dev] = sk = skinny_efficiency(g, dm)
            if sk.applies:  # the model as shipped: the fitted GEMM parameters plus the term
                res["eta_mem_skinny"] = sk.eta
                dm = DeviceModel(**{**dm.__dict__, "eta_mem_skinny": sk.eta})
            pred = predict_gemm(g)(dm)
            table += [*rel_err_table(dev, g.op, pred, g.t), summary_rows(dev, "GEMM", pred, g.t)]
            if sk.applies:
                sel = (g.n >= 2) & (g.n < SKINNY_MAX_N)
                group = f"GEMM 2 <= n < {SKINNY_MAX_N}"
                table.append(summary_rows(dev, group, pred[sel], g.t[sel]))
        if dev in elems:
            e = elems[dev]
            p, dm, rows = _fit_group(dev, dm, ELEM_NAMES, predict_elem(e), e.t, e.op, "elementwise")
            res |= p
            table += rows
        if dev in comms:
            c = comms[dev]
            label = np.array(
                [
                    f"{k}{'/inter' if i else ''} ({s})"
                    for k, i, s in zip(c.kind, c.inter, c.source, strict=True)
                ]
            )
            names = comm_names_for(c)
            p, dm, rows = _fit_group(dev, dm, names, predict_comm(c), c.t, label, "collectives")
            res |= p
            table += rows
        fitted[dev] = res
    notes = {d: skinny_note(d, sk, skinny) for d, sk in skinny.items() if sk.applies}
    return fitted, table, notes


def summary_rows(dev: str, group: str, pred: np.ndarray, meas: np.ndarray) -> dict:
    err = np.abs(pred - meas) / meas
    return {
        "device": dev,
        "op": f"ALL {group}",
        "n": int(err.size),
        "median": float(np.median(err)),
        "p90": float(np.quantile(err, 0.9)),
    }


def print_table(table: list[dict]) -> None:
    print(f"{'device':16} {'op':38} {'n':>6} {'median':>7} {'p90':>7}")
    for r in table:
        print(f"{r['device']:16} {r['op']:38} {r['n']:6d} {r['median']:7.1%} {r['p90']:7.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, default=DEFAULT_REF)
    ap.add_argument("--write", action="store_true", help="update profile_data/calibration.json")
    args = ap.parse_args()
    fitted, table, notes = calibrate(args.reference)
    print_table(table)
    print(json.dumps(fitted, indent=1))
    for note in notes.values():
        print(note)
    if args.write:
        write_calibration(fitted, notes)


SOURCES = {
    "gemm": {
        "H100-SXM-80GB": "fitted: vidur/compute/h100/*/mlp.csv (5 models, TP 1-8, 1-4096 tokens; "
        "QKV, out-proj, gate+up, down GEMMs; median ms)",
        "A100-SXM-80GB": "fitted: vidur/compute/a100/*/mlp.csv (8 models, TP 1-8, 1-32768 tokens; "
        "QKV, out-proj, gate+up, down GEMMs; median ms)",
        "V100-PCIE-16GB": "fitted: APEX+ profiles/comp/V100-PCIE-16GB/gemm_0.csv (92k half GEMMs)",
    },
    "elementwise": {
        "H100-SXM-80GB": "fitted: vidur h100 mlp.csv input_layernorm, mlp_act, attn_rope",
        "A100-SXM-80GB": "fitted: vidur a100 mlp.csv input_layernorm, mlp_act, attn_rope",
    },
    "collective": {
        "H100-SXM-80GB": "fitted: APEX+ profiles/comm/H100-SXM-80GB (5 kinds, 2-8 GPUs, "
        "nccl-tests) "
        "+ vidur/network/h100_dgx (all_reduce 2-8 GPUs, send_recv intra and 2 nodes)",
        "H200-SXM-141GB": "fitted: APEX+ profiles/comm/H200-SXM-141GB (5 kinds, 2-8 GPUs); "
        "inter-node values copied from H100 (same NDR 400 Gb/s NIC; no data)",
        "A100-SXM-80GB": "fitted: vidur/network/a100_dgx (all_reduce 2-16 GPUs intra and inter, "
        "send_recv); all_gather/reduce_scatter/alltoall efficiencies copied from H100 (no data)",
        "V100-PCIE-16GB": "fitted: APEX+ profiles/comm/V100-PCIE-16GB "
        "(5 kinds, 1-4 nodes x 1-4 GPUs)",
    },
}
ATTENTION = {
    # flash-attention forward reaches well below the GEMM peak; values are assumptions
    "H100-SXM-80GB": (
        0.40,
        2e-5,
        "ASSUMED: FlashAttention-2 in vLLM 0.6 reaches ~350-400 TF of "
        "989 on H100 (FA2/FA3 papers); launch 20 us per layer (not measured)",
    ),
    "H200-SXM-141GB": (0.40, 2e-5, "ASSUMED: as H100 (same GH100 compute)"),
    "B200": (0.40, 2e-5, "ASSUMED: as H100 fraction of peak (no data)"),
    "A100-SXM-80GB": (
        0.55,
        2e-5,
        "ASSUMED: FlashAttention-2 forward ~170 TF of 312 on A100 "
        "(FA2 paper); launch 20 us per layer (not measured)",
    ),
    "V100-PCIE-16GB": (
        0.30,
        3e-5,
        "ASSUMED: no FlashAttention on Volta (xformers/unfused kernels), ~30% of the tensor peak",
    ),
    "cpu": (0.30, 5e-5, "ASSUMED: rough"),
}
DERIVED = {
    # device -> {group: (from device, note)}
    "H200-SXM-141GB": {
        "gemm": (
            "H100-SXM-80GB",
            "derived: H100 fit (same GH100 compute); eta_mem applied to "
            "H200's 4.8 TB/s HBM3e (assumption)",
        ),
        "elementwise": ("H100-SXM-80GB", "derived: H100 fit (same GH100)"),
    },
    "B200": {
        "gemm": ("H100-SXM-80GB", "derived: H100 fit (nearest measured device; no B200 data)"),
        "elementwise": ("H100-SXM-80GB", "derived: H100 fit (no B200 data)"),
        "collective": (
            "H100-SXM-80GB",
            "derived: H100 fit applied to NVLink5 900 GB/s/dir and 400 Gb/s NICs (no B200 data)",
        ),
    },
    "V100-PCIE-16GB": {
        "elementwise": ("A100-SXM-80GB", "derived: A100 fit (no V100 elementwise data)"),
    },
    "cpu": {
        "gemm": (
            "A100-SXM-80GB",
            "APPROXIMATE: A100 efficiencies reused for the host CPU; only meant for smoke tests",
        ),
        "elementwise": ("A100-SXM-80GB", "APPROXIMATE: A100 fit reused"),
        "collective": ("V100-PCIE-16GB", "APPROXIMATE: V100 PCIe fit reused"),
    },
}
# devices without any measurement: every group copies the nearest measured device
# (datasheet facts in profile_data/devices.json, HARDWARE.md batch 2)
_PCIE_NOTE = "the only measured PCIe-only system: peer traffic over PCIe, no NVLink"
UNMEASURED: dict[str, tuple[str, str, str]] = {
    # device -> (GEMM/elementwise/attention from, collectives from, why)
    "H20": ("H100-SXM-80GB", "H100-SXM-80GB", "nearest measured device; no H20 data"),
    "L4": ("H100-SXM-80GB", "V100-PCIE-16GB", "no L4 data"),
    "L40S": ("H100-SXM-80GB", "V100-PCIE-16GB", "no L40S data"),
    "A10G": ("H100-SXM-80GB", "V100-PCIE-16GB", "no A10G data"),
    "A100-SXM4-40GB": ("A100-SXM-80GB", "A100-SXM-80GB", "same GA100 die; no 40 GB data"),
    "H100-PCIe": ("H100-SXM-80GB", "V100-PCIE-16GB", "no H100-PCIe data"),
    "H100-NVL": ("H100-SXM-80GB", "H100-SXM-80GB", "nearest measured device; no H100-NVL data"),
    "H200-NVL": ("H100-SXM-80GB", "H100-SXM-80GB", "nearest measured device; no H200-NVL data"),
    "GB200": ("H100-SXM-80GB", "H100-SXM-80GB", "nearest measured device; no GB200 data"),
    "MI300X": ("H100-SXM-80GB", "H100-SXM-80GB", "no MI300X data"),
    "MI325X": ("H100-SXM-80GB", "H100-SXM-80GB", "no MI325X data"),
}
# single parameters set from a published figure instead of a copied fit
OVERRIDES: dict[str, dict[str, tuple[float, str]]] = {
    dev: {
        "busbw_eff_intra": (
            0.75,
            "busbw_eff_intra 0.75 = ~48 of 64 GB/s per direction usable per Infinity Fabric "
            "link after CRC/protocol overhead (rocm.blogs.amd.com mi300x-rccl-xgmi, "
            "HARDWARE.md batch 2)",
        )
    }
    for dev in ("MI300X", "MI325X")
}
for _dev, (_base, _coll, _why) in UNMEASURED.items():
    _coll_why = _PCIE_NOTE + f"; {_why}" if _coll == "V100-PCIE-16GB" else _why
    DERIVED[_dev] = {
        "gemm": (_base, f"derived: {_base} gemm fit ({_why})"),
        "elementwise": (_base, f"derived: {_base} elementwise fit ({_why})"),
        "collective": (_coll, f"derived: {_coll} collective fit ({_coll_why})"),
    }
    _eta, _launch, _ = ATTENTION[_base]
    ATTENTION[_dev] = (_eta, _launch, f"ASSUMED: as {_base} ({_why})")

# parameters that a device's own data cannot identify, and where they come from
COPY_PARAMS = {
    "A100-SXM-80GB": ("H100-SXM-80GB", ["eff_all_gather", "eff_reduce_scatter", "eff_alltoall"]),
    "H200-SXM-141GB": (
        "H100-SXM-80GB",
        ["alpha_inter", "alpha_log2_inter", "busbw_eff_inter", "msg_half_bytes_inter"],
    ),
}


def build_calibration(fitted: dict[str, dict[str, float]], notes: dict[str, str]) -> dict:
    fitted = {k: dict(v) for k, v in fitted.items()}
    for dev, (src, names) in COPY_PARAMS.items():
        for nm in names:
            fitted[dev][nm] = fitted[src][nm]
    out: dict = {
        "_about": "Fitted parameters of the analytic device model "
        "(apex_fast/profiles/analytic.py). "
        "Reproduce with: PYTHONPATH=. python bench/calibrate_device_model.py --write "
        "(reads ../shared/reference, never needed at run time). Fit: Nelder-Mead on the mean "
        "|log(predicted/measured)|, per device and group.",
        "devices": {},
    }
    measured = ["V100-PCIE-16GB", "A100-SXM-80GB", "H100-SXM-80GB", "H200-SXM-141GB", "B200"]
    devices = [*measured, *UNMEASURED, "cpu"]
    for dev in devices:
        entry: dict = {}
        for group, names in GROUPS.items():
            if group == "attention":
                eta, launch, note = ATTENTION[dev]
                entry[group] = {"eta_attn": eta, "t_launch_attn": launch, "source": note}
                continue
            src_dev, note = dev, SOURCES.get(group, {}).get(dev)
            if note is None:
                src_dev, note = DERIVED[dev][group]
            block = {nm: float(f"{fitted[src_dev][nm]:.4g}") for nm in names}
            for nm, (value, why) in OVERRIDES.get(dev, {}).items():
                if nm in block:
                    block[nm] = value
                    note = f"{note}; {why}"
            block["source"] = note
            if group == "gemm" and "eta_mem_skinny" in fitted[src_dev]:
                block["eta_mem_skinny"] = fitted[src_dev]["eta_mem_skinny"]
                block["source_eta_mem_skinny"] = notes[src_dev]
            entry[group] = block
        out["devices"][dev] = entry
    return out


def write_calibration(fitted: dict[str, dict[str, float]], notes: dict[str, str]) -> None:
    path = PROFILE_DATA_DIR / "calibration.json"
    path.write_text(json.dumps(build_calibration(fitted, notes), indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

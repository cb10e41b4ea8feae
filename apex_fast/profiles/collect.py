"""Measure op times on this machine and write them as APEX+ profile tables (`apex.py profile`,
whose command is apex_fast/cli/profile.py; the tables are read by apex_fast/profiles/measured.py).

    python apex.py profile --backend cpu --out out/prof [--quick]

writes `<out>/comp/<backend>/gemm_0.csv` (gpu,dtype,m,k,n,time(us)), `mha_0.csv`
(gpu,dtype,num_heads,head_size,batch_size,seq_len,time(us)) and `meta.json` (machine, grid,
timing rule). The `cpu` backend uses NumPy (the BLAS it was built with, all cores) in float32:
GEMMs as W[m x k] @ X[k x n], causal attention as batched Q.K^T, mask, softmax, P.V. A CUDA
backend (any other name, e.g. the GPU's device name) uses PyTorch when it is installed, and
times collectives with torch.distributed/NCCL only when launched under torchrun with more than
one process; without PyTorch and a GPU it stops with a clear message.

Timing: one warm-up call, then repeated calls until `min_time` has passed (at least 3, at most
`max_reps`); the minimum is written, in microseconds. (The minimum, not the mean: on a shared
machine other processes stall multi-threaded BLAS for whole scheduler quanta, which a median of a
few calls does not filter out; the fastest call is what the hardware can do.)
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from apex_fast.errors import ApexError

GEMM_HEADER = ("gpu", "dtype", "m", "k", "n", "time(us)")
ATTN_HEADER = ("gpu", "dtype", "num_heads", "head_size", "batch_size", "seq_len", "time(us)")

_POW2 = [2**i for i in range(15)]


def gemm_grid(quick: bool) -> tuple[list[int], list[int], list[int]]:
    """(m values, k values, n values) of the GEMM sweep."""
    if quick:
        mk = [64, 256, 1024, 4096]
        ns = [1, 4, 16, 64, 256, 1024]
        return mk, mk, ns
    mk = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    ns = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
    ns += [1536, 2048]
    return mk, mk, ns


def attn_grid(quick: bool) -> list[tuple[int, int, int, int]]:
    """(heads, head_size, batch, seq) points of the attention sweep (batch x seq <= limit)."""
    if quick:
        heads, sizes, batches, seqs, limit = [4, 16], [64], [1, 4], [64, 256, 1024], 2048
    else:
        heads, sizes, batches = [1, 4, 8, 16, 32], [64, 128], [1, 2, 4, 8, 16]
        seqs, limit = [16, 32, 64, 128, 256, 512, 1024, 2048], 4096
    return [
        (h, d, b, s) for h in heads for d in sizes for b in batches for s in seqs if b * s <= limit
    ]


def time_call(fn: Callable[[], object], min_time: float, max_reps: int = 50) -> float:
    """Fastest of the timed calls of fn(), in seconds, after one warm-up call."""
    fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < 3 or (time.perf_counter() - start < min_time and len(samples) < max_reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return min(samples)


def retime_outliers(
    t: np.ndarray,
    axes: tuple[list[int], list[int], list[int]],
    make: Callable[[int, int, int], Callable[[], object]],
    min_time: float,
    passes: int = 3,
) -> int:
    """Re-time GEMM points slower than a larger neighbour (in place); returns how many.

    A GEMM never gets cheaper when m, k or n grows, so a point more than 1.5x slower than one of
    its larger neighbours was stalled by another process; it is timed again for longer and keeps
    the faster of the two results.
    """
    fixed = 0
    for _ in range(passes):
        bigger = np.full(t.shape, np.inf)
        for d in range(3):
            nxt = np.swapaxes(np.swapaxes(t, 0, d)[1:], 0, d)
            sl = [slice(None)] * 3
            sl[d] = slice(0, -1)
            bigger[tuple(sl)] = np.minimum(bigger[tuple(sl)], nxt)
        bad = np.argwhere(t > 1.5 * bigger)
        if len(bad) == 0:
            break
        for i, j, l_ in bad:
            fn = make(axes[0][i], axes[1][j], axes[2][l_])
            t[i, j, l_] = min(t[i, j, l_], time_call(fn, 5 * min_time, max_reps=200))
            fixed += 1
    return fixed


# ------------------------------------------------------------------ NumPy (CPU)
def _np_gemm(m: int, k: int, n: int, rng: np.random.Generator) -> Callable[[], object]:
    w = rng.standard_normal((m, k), dtype=np.float32)
    x = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), dtype=np.float32)
    return lambda: np.matmul(w, x, out=out)


def _np_attention(h: int, d: int, b: int, s: int, rng: np.random.Generator):
    q = rng.standard_normal((b, h, s, d), dtype=np.float32)
    k = rng.standard_normal((b, h, s, d), dtype=np.float32)
    v = rng.standard_normal((b, h, s, d), dtype=np.float32)
    mask = np.triu(np.full((s, s), -np.inf, dtype=np.float32), k=1)
    scale = np.float32(1.0 / np.sqrt(d))

    def run() -> np.ndarray:
        sc = np.matmul(q, k.transpose(0, 1, 3, 2))
        sc *= scale
        sc += mask
        sc -= sc.max(axis=-1, keepdims=True)
        np.exp(sc, out=sc)
        sc /= sc.sum(axis=-1, keepdims=True)
        return np.matmul(sc, v)

    return run


# ------------------------------------------------------------------ PyTorch (CUDA)
def _torch_cuda():
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _torch_gemm(torch, m: int, k: int, n: int, dtype):
    w = torch.randn(m, k, device="cuda", dtype=dtype)
    x = torch.randn(k, n, device="cuda", dtype=dtype)

    def run():
        torch.matmul(w, x)
        torch.cuda.synchronize()

    return run


def _torch_attention(torch, h: int, d: int, b: int, s: int, dtype):
    q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=dtype) for _ in range(3))
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def run():
        sdpa(q, k, v, is_causal=True)
        torch.cuda.synchronize()

    return run


def _torch_collectives(torch, name: str, dtype_name: str, dtype, min_time: float) -> list[list]:
    """all_reduce / all_gather / reduce_scatter rows when run under torchrun (world > 1)."""
    import torch.distributed as dist  # noqa: PLC0415

    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return []
    if not dist.is_initialized():
        dist.init_process_group("nccl")
    world = dist.get_world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    nodes = world // local
    rows = []
    for kind in ("all_reduce", "all_gather", "reduce_scatter"):
        for e in [2**i for i in range(8, 27, 2)]:
            buf = torch.zeros(e, device="cuda", dtype=dtype)
            if kind == "all_reduce":

                def op(buf=buf):
                    dist.all_reduce(buf)
            elif kind == "all_gather":
                part = torch.zeros(e // world, device="cuda", dtype=dtype)

                def op(buf=buf, part=part):
                    dist.all_gather_into_tensor(buf, part)
            else:
                part = torch.zeros(e // world, device="cuda", dtype=dtype)

                def op(buf=buf, part=part):
                    dist.reduce_scatter_tensor(part, buf)

            def timed(op=op):
                op()
                torch.cuda.synchronize()

            t = time_call(timed, min_time)
            nbytes = e * buf.element_size()
            rows.append([kind, name, nodes, local, dtype_name, nbytes // 1024, round(t * 1e6, 2)])
    return rows


# ------------------------------------------------------------------ driver
def _write_csv(path: Path, header: tuple[str, ...], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _progress(enabled: bool, what: str, i: int, n: int) -> None:
    if enabled:
        sys.stderr.write(f"\r{what}: {i}/{n}")
        if i == n:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_profile(
    backend: str,
    out: Path,
    quick: bool = False,
    dtype: str | None = None,
    min_time: float | None = None,
    gemm: bool = True,
    attention: bool = True,
    progress: bool = False,
) -> dict[str, Path]:
    """Measure and write the tables; returns {table name: path}."""
    from apex_fast.dtypes import canonical_dtype

    min_time = (0.005 if quick else 0.02) if min_time is None else min_time
    rng = np.random.default_rng(0)
    torch = None
    if backend.lower() == "cpu":
        name = "cpu"
        dtype_name = canonical_dtype(dtype or "float", "--dtype")
        if dtype_name != "float":
            raise ApexError(
                "the NumPy CPU backend measures float (float32) only: NumPy has no BLAS for "
                f"{dtype_name}; the planner uses float rows for half GEMMs on the cpu device"
            )

        def make_gemm(m: int, k: int, n: int):
            return _np_gemm(m, k, n, rng)

        def make_attn(h: int, d: int, b: int, s: int):
            return _np_attention(h, d, b, s, rng)

    else:
        torch = _torch_cuda()
        if torch is None:
            raise ApexError(
                f"backend {backend!r} needs PyTorch with a CUDA device (not available here); "
                "use --backend cpu to profile this machine with NumPy"
            )
        name = backend
        dtype_name = canonical_dtype(dtype or "half", "--dtype")
        tdt = {"half": torch.float16, "float": torch.float32}.get(dtype_name)
        if tdt is None:
            raise ApexError(f"--dtype {dtype_name}: the PyTorch backend measures half or float")

        def make_gemm(m: int, k: int, n: int):
            return _torch_gemm(torch, m, k, n, tdt)

        def make_attn(h: int, d: int, b: int, s: int):
            return _torch_attention(torch, h, d, b, s, tdt)

    comp = Path(out) / "comp" / name
    written: dict[str, Path] = {}
    t_start = time.perf_counter()
    if gemm:
        ms, ks, ns = gemm_grid(quick)
        tg = np.zeros((len(ms), len(ks), len(ns)))
        for i, m in enumerate(ms):
            for j, k in enumerate(ks):
                for l_, n in enumerate(ns):
                    tg[i, j, l_] = time_call(make_gemm(m, k, n), min_time)
                    _progress(
                        progress, "GEMM", i * len(ks) * len(ns) + j * len(ns) + l_ + 1, tg.size
                    )
        retimed = retime_outliers(tg, (ms, ks, ns), make_gemm, min_time)
        rows = [
            [name, dtype_name, m, k, n, round(tg[i, j, l_] * 1e6, 3)]
            for i, m in enumerate(ms)
            for j, k in enumerate(ks)
            for l_, n in enumerate(ns)
        ]
        written["gemm"] = comp / "gemm_0.csv"
        _write_csv(written["gemm"], GEMM_HEADER, rows)
    if attention:
        pts = attn_grid(quick)
        rows = []
        for h, d, b, s in pts:
            t = time_call(make_attn(h, d, b, s), min_time)
            rows.append([name, dtype_name, h, d, b, s, round(t * 1e6, 3)])
            _progress(progress, "attention", len(rows), len(pts))
        rows.sort(key=lambda r: (r[2], r[3], r[4], r[5]))
        written["mha"] = comp / "mha_0.csv"
        _write_csv(written["mha"], ATTN_HEADER, rows)
    notes = ["one device: no collective tables"]
    if gemm:
        notes.append(f"{retimed} GEMM points re-timed (slower than a larger neighbour)")
    if torch is not None:
        comm = _torch_collectives(torch, name, dtype_name, tdt, min_time)
        for kind in sorted({r[0] for r in comm}):
            path = Path(out) / "comm" / name / f"{kind}.csv"
            header = ("gpu", "num_nodes", "num_gpus_per_node", "dtype", "size(kb)", "time(us)")
            _write_csv(path, header, [r[1:] for r in comm if r[0] == kind])
            written[kind] = path
        if comm:
            notes = []
    meta = {
        "backend": name,
        "dtype": dtype_name,
        "quick": quick,
        "min_time_s": min_time,
        "timing": "minimum of repeated calls after one warm-up (>= 3 calls, until min_time)",
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": _blas_name(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.perf_counter() - t_start, 1),
        "tables": {k: str(p.relative_to(out)) for k, p in written.items()},
        "notes": notes,
    }
    comp.mkdir(parents=True, exist_ok=True)
    (comp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    written["meta"] = comp / "meta.json"
    return written


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _blas_name() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"

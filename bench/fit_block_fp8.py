"""Fit of BLOCK_FP8_SAT_K (apex_fast/profiles/analytic.py): block-scaled FP8 GEMM throughput vs K.

Data: the DeepGEMM README's "Normal GEMMs for dense models" table (H800 SXM, FP8 E4M3 with
128x128 weight / 1x128 activation block scales, DeepSeek-V3 shapes), rows with M = 4096 tokens
(compute-bound; the M = 64/128 rows are memory-bound and carry no information on K):
https://github.com/deepseek-ai/DeepGEMM (README, "Performance", February-April 2025).
Model: this tool's per-tensor FP8 GEMM on H100-SXM (H800 has the same GH100 compute and FP8
peak) times k / (k + c); c by least squares of log(predicted / published) over the rows.

    .venv/bin/python bench/fit_block_fp8.py
"""

from __future__ import annotations

import numpy as np

from apex_fast.profiles import analytic

# (M tokens, N, K, published TFLOPS)
DEEPGEMM_M4096 = (
    (4096, 2112, 7168, 1058.0),
    (4096, 24576, 1536, 990.0),
    (4096, 32768, 512, 590.0),
    (4096, 7168, 16384, 1358.0),
    (4096, 4096, 7168, 1304.0),
    (4096, 7168, 2048, 1025.0),
)


def model_tflops(dm: analytic.DeviceModel, m: int, n: int, k: int, c: float | None) -> float:
    """TFLOPS of the device model for the README's shape (weights N x K, M tokens); c None:
    per-tensor FP8, else block-scaled with saturation constant c."""
    saved = analytic.BLOCK_FP8_SAT_K
    try:
        if c is not None:
            analytic.BLOCK_FP8_SAT_K = c
        t = analytic.gemm_time(dm, n, k, m, 1.0, 1.0, "float8", block_scaled=c is not None)
    finally:
        analytic.BLOCK_FP8_SAT_K = saved
    return 2.0 * m * n * k / float(t) / 1e12


def main() -> None:
    dm = analytic.device_model("H100-SXM-80GB")
    grid = np.arange(50.0, 3000.0, 10.0)

    def loss(c: float) -> float:
        return sum(np.log(model_tflops(dm, m, n, k, c) / p) ** 2 for m, n, k, p in DEEPGEMM_M4096)

    best = float(grid[int(np.argmin([loss(c) for c in grid]))])
    print(f"BLOCK_FP8_SAT_K = {best:.0f} (shipped {analytic.BLOCK_FP8_SAT_K:.0f})")
    print(f"{'M':>5} {'N':>6} {'K':>6} {'DeepGEMM':>9} {'per-tensor':>11} {'block':>7} {'err':>6}")
    errs = []
    for m, n, k, pub in DEEPGEMM_M4096:
        plain = model_tflops(dm, m, n, k, None)
        blk = model_tflops(dm, m, n, k, best)
        errs.append(abs(blk / pub - 1))
        print(
            f"{m:5d} {n:6d} {k:6d} {pub:9.0f} {plain:11.0f} {blk:7.0f} {100 * (blk / pub - 1):5.1f}%"
        )
    print(f"median |error| {100 * float(np.median(errs)):.1f}% (per-tensor model: ", end="")
    plain_errs = [abs(model_tflops(dm, m, n, k, None) / p - 1) for m, n, k, p in DEEPGEMM_M4096]
    print(f"{100 * float(np.median(plain_errs)):.1f}%)")


if __name__ == "__main__":
    main()

"""Fit of BLOCK_FP8_KERNEL_RATE (apex_fast/profiles/analytic.py): the compute rate of the
block-scaled FP8 GEMM kernels the engines run, relative to DeepGEMM (the kernel the device
model's block-FP8 rate is fitted to, bench/fit_block_fp8.py).

Data: SGLang's sgl-kernel benchmark `benchmark/bench_fp8_blockwise_gemm.py`, DeepSeek-V3 weight
shapes, times in microseconds of the same GEMM run by four kernels, as printed in two pull
requests of April 2025 (the month of the engine versions in the published DeepSeek-R1 runs):
  - https://github.com/sgl-project/sglang/pull/5207 (2025-04-09), N=4608 K=7168
  - https://github.com/sgl-project/sglang/pull/5820 (2025-04-28), N=3072 K=1536
Columns: "vllm" (vLLM's CUTLASS block-FP8 kernel, ops.cutlass_scaled_mm with block scales:
what vLLM 0.8.4 runs for block-FP8 linears on Hopper), "sglang triton" (the Triton block-FP8
GEMM, whose inner loop the Triton fused-MoE kernel of vLLM 0.8.4 and SGLang 0.4.x shares),
"deepgemm". Rows with M = 4096 tokens only (compute-bound; smaller M are memory-bound and
carry no information on the compute rate).
Model: rate(kernel) = geometric mean over the shapes of t(DeepGEMM) / t(kernel).

    .venv/bin/python bench/fit_block_fp8_kernels.py
"""

from __future__ import annotations

import math

from apex_fast.profiles import analytic

# (N, K, M, {kernel: microseconds})
SGLANG_BENCH_M4096 = (
    (4608, 7168, 4096, {"cutlass": 350.224018, "triton": 466.143996, "deepgemm": 270.687997}),
    (3072, 1536, 4096, {"cutlass": 53.024001, "triton": 68.672001, "deepgemm": 37.632000}),
)


def fitted_rates() -> dict[str, float]:
    """Geometric-mean rate of each kernel relative to DeepGEMM over the table's shapes."""
    out = {"deepgemm": 1.0}
    for kernel in ("cutlass", "triton"):
        logs = [math.log(t["deepgemm"] / t[kernel]) for _, _, _, t in SGLANG_BENCH_M4096]
        out[kernel] = math.exp(sum(logs) / len(logs))
    return out


def main() -> None:
    rates = fitted_rates()
    for kernel, r in rates.items():
        shipped = analytic.BLOCK_FP8_KERNEL_RATE[kernel]
        print(f"{kernel:9} rate {r:.3f} (shipped {shipped:.3f})")
    print(f"{'N':>5} {'K':>5} {'M':>5} {'kernel':>9} {'published us':>13} {'DeepGEMM/kernel':>16}")
    for n, k, m, t in SGLANG_BENCH_M4096:
        for kernel in ("cutlass", "triton"):
            print(
                f"{n:5d} {k:5d} {m:5d} {kernel:>9} {t[kernel]:13.1f} {t['deepgemm'] / t[kernel]:16.3f}"
            )


if __name__ == "__main__":
    main()

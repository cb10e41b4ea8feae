"""Power model of one GPU: busy power from a step's compute and memory utilisation and the SM
clock, idle power otherwise. Full derivation and sources: docs/energy.md.

Per GPU, while it runs a step:

    P = P_idle + B * (f/f0) * v(f)^2 + a_c * u_c * v(f)^2 + a_m * u_m          (capped at TDP)

- u_c = FLOP/s executed / dense peak FLOP/s *at the boost clock* f0 (a rate, so the same FLOPs
  done more slowly at a lower clock draw proportionally less power);
- u_m = HBM bytes/s / datasheet HBM bandwidth (HBM is clocked independently of the SMs, so its
  energy per byte does not change with the SM clock);
- v(f) = V(f)/V(f0), the relative core voltage, assumed linear in the clock:
  v = V_FLOOR + (1 - V_FLOOR) * f/f0. Dynamic CMOS energy per operation scales with V^2, so each
  FLOP gets cheaper at a lower clock, and the clock tree/control ("busy base" B) scales with f*V^2.
- B, a_c, a_m are fitted per device so that the model reproduces two measured anchor points
  (splitwise-sim / Splitwise, Patel et al., ISCA 2024, arXiv 2311.18677, via HARDWARE.md):
  a prefill step draws TDP (H100 700 W, A100 400 W) and a batched decode step draws
  H100 380 W = 0.54 TDP, A100 250 W = 0.625 TDP. The anchor utilisations are those our analytic
  device model gives Llama-3-70B on H100: a GEMM-dominated prefill of a 2048-token chunk
  (TP2 per stage: u_c 0.56, u_m 0.08, the model's highest prefill utilisation, so the TDP cap
  is reached only by the most compute-intensive steps) and a decode step of 64 sequences at
  TP8 (u_c 0.07, u_m 0.36). A TP8 prefill (u_c 0.34, 40% of the step in all-reduce) then draws
  ~0.7 TDP.
- Steps whose formula exceeds TDP are capped at TDP; a real GPU would also lower its clock
  (power throttling), which the step-time model does not include.
- Bare idle power (devices.json: H100 75 W, A100 63 W, splitwise-sim) is drawn by waiting GPUs.

Sanity checks against other published figures (docs/energy.md): memory-bound decode stays far
below TDP (H200: 137-300 W, Ma et al., arXiv 2605.11999), and locking the SM clock lowers decode
energy by up to ~32% (same paper) at a small throughput loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from apex_fast.hardware.devices import DeviceSpec

# Relative core voltage at f -> 0 (ASSUMED: typical DVFS curves run from ~0.65-0.7 V at the lowest
# clocks to ~1.0-1.1 V at boost; V_FLOOR = 0.6 gives v(810/1980) = 0.76).
V_FLOOR = 0.6
# Busy base power (clocks running, kernels launching, near-zero utilisation) as a fraction of
# TDP - idle. ASSUMED; consistent with a loaded-but-light GPU drawing ~170 W on H100.
BUSY_BASE_FRACTION = 0.15
# Anchor steps (utilisation of the analytic model, Llama-3-70B on H100; see module docstring)
PREFILL_ANCHOR = (0.56, 0.08)  # (u_c, u_m) -> draws TDP
DECODE_ANCHOR = (0.07, 0.36)  # (u_c, u_m) -> draws DECODE_FRACTION * TDP
# Measured decode power / TDP (splitwise-sim: H100 380/700 W, A100 250/400 W); others: the mean.
DECODE_FRACTION = {"H100": 380.0 / 700.0, "A100": 250.0 / 400.0}
DEFAULT_DECODE_FRACTION = 0.58


@dataclass(frozen=True)
class PowerCoefficients:
    idle_w: float
    tdp_w: float
    base_w: float  # B
    compute_w: float  # a_c: W per unit of u_c at the boost clock
    memory_w: float  # a_m: W per unit of u_m


def voltage_factor(clock_factor: float) -> float:
    """Relative core voltage v(f) for f/f0 = clock_factor (1.0 at the boost clock)."""
    cf = min(max(float(clock_factor), 0.0), 1.0)
    return V_FLOOR + (1.0 - V_FLOOR) * cf


def decode_fraction(dev: DeviceSpec) -> float:
    for key, frac in DECODE_FRACTION.items():
        if key.lower() in dev.name.lower():
            return frac
    return DEFAULT_DECODE_FRACTION


@lru_cache(maxsize=64)
def _coefficients(name: str, idle_w: float, tdp_w: float, dec_frac: float) -> PowerCoefficients:
    span = tdp_w - idle_w
    base = BUSY_BASE_FRACTION * span
    # Solve a_c * u_c + a_m * u_m = target - idle - base at the two anchors (2x2 linear system).
    a = np.array([PREFILL_ANCHOR, DECODE_ANCHOR], dtype=np.float64)
    b = np.array([tdp_w - idle_w - base, dec_frac * tdp_w - idle_w - base])
    a_c, a_m = np.linalg.solve(a, b)
    return PowerCoefficients(idle_w, tdp_w, base, max(float(a_c), 0.0), max(float(a_m), 0.0))


def power_coefficients(dev: DeviceSpec) -> PowerCoefficients:
    return _coefficients(dev.name, float(dev.idle_w), float(dev.tdp_w), decode_fraction(dev))


def step_power_w(
    dev: DeviceSpec,
    compute_utilisation: np.ndarray | float,
    clock_factor: float = 1.0,
    memory_utilisation: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Power in W of one GPU running steps with these utilisations (arrays broadcast).

    compute_utilisation: FLOP/s over the dense peak at the boost clock; memory_utilisation:
    HBM bytes/s over the datasheet bandwidth; clock_factor: SM clock / boost clock."""
    k = power_coefficients(dev)
    u_c = np.clip(np.asarray(compute_utilisation, dtype=np.float64), 0.0, 1.0)
    u_m = np.clip(np.asarray(memory_utilisation, dtype=np.float64), 0.0, 1.0)
    cf = min(max(float(clock_factor), 0.0), 1.0)
    v2 = voltage_factor(cf) ** 2
    p = k.idle_w + k.base_w * cf * v2 + k.compute_w * u_c * v2 + k.memory_w * u_m
    return np.minimum(p, k.tdp_w)


def generated_tokens(m) -> float:  # m: PlanMetrics (duck-typed to avoid an import cycle)
    return float(m.throughput_tokens_per_s) * float(m.makespan_s)


def gpu_seconds_per_token(m) -> float:
    """GPU-seconds per generated token: the rate-free cost key (every plan of a search uses the
    whole cluster, so $ / token = $/GPU-hour x GPU-hours / tokens)."""
    gen = generated_tokens(m)
    return 3600.0 * float(m.gpu_hours) / gen if gen > 0 else float("inf")


def usd_per_mtok(m, gpu_hour_cost: float) -> float:
    """$ per million generated tokens at gpu_hour_cost $ per GPU-hour."""
    return gpu_hour_cost * gpu_seconds_per_token(m) / 3600.0 * 1e6


def apply_cost(m, gpu_hour_cost: float) -> None:
    """Fill the cost fields of a PlanMetrics in place."""
    m.gpu_hour_cost = float(gpu_hour_cost)
    m.cost_usd_per_mtok = usd_per_mtok(m, gpu_hour_cost) if gpu_hour_cost > 0 else float("nan")

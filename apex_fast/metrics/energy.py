"""Power model: busy power from a step's utilisation and the SM clock, idle power otherwise.

Figures (../shared/HARDWARE.md): an H100 draws about its TDP (700 W) in prefill and 54-63% of it
in decode (splitwise-sim measurements: A100 400/250 W, H100 700/380 W); bare idle is 75 W (H100),
63 W (A100). We model busy power per GPU as

    P = P_idle + (TDP - P_idle) * (0.25 + 0.75 * u) * (f / f_boost)^2

with u = max(compute utilisation, memory-bandwidth utilisation) of the step in [0, 1]. At u = 0.9
(prefill) this gives ~0.95 TDP, at u = 0.4 (typical batched decode) ~0.57 TDP, matching the figures
above. The (f / f_boost)^2 term is the usual dynamic-power scaling with clock and voltage (DVFS);
it is an approximation, not a measurement.
"""

from __future__ import annotations

import numpy as np

from apex_fast.hardware.devices import DeviceSpec


def step_power_w(dev: DeviceSpec, utilisation: np.ndarray, clock_factor: float = 1.0) -> np.ndarray:
    u = np.clip(np.asarray(utilisation, dtype=np.float64), 0.0, 1.0)
    dyn = (dev.tdp_w - dev.idle_w) * (0.25 + 0.75 * u) * clock_factor**2
    return dev.idle_w + dyn

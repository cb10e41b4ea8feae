"""Error bands: how far off a prediction may be, from out-of-sample validation residuals.

Each measured run belongs to a class (engine, GPU, weight dtype family, load regime). Its
residual is taken from the leave-one-family-out replay, i.e. with host parameters fitted without
that run's model family, so a band says how well the model transfers, not how well it was fitted.
A band is the 90th percentile of the absolute relative errors of the runs in the class (with the
mean signed error as the bias). A configuration matches a class when engine, GPU and dtype family
match; the regime narrows it when that regime was measured. Anything else is "not validated".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from apex_fast.sim.step_time import FIT_FILE

BAND_QUANTILE = 0.9
KEYS = ("ttft", "itl", "latency")


def dtype_family(weight_dtype: str) -> str:
    return {"half": "bf16", "float": "fp32", "float8": "fp8"}.get(weight_dtype, weight_dtype)


def class_key(engine: str, gpu: str, weight_dtype: str, regime: str | None = None) -> str:
    key = f"{engine}|{gpu}|{dtype_family(weight_dtype)}"
    return key if regime is None else f"{key}|{regime}"


def band_table(rows: list[dict]) -> dict[str, dict]:
    """Bands per class and per class+regime from replay rows (validation.fit.errors)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        run = r["run"]
        for key in (
            class_key(run.engine, run.gpu, run.weight_dtype),
            class_key(run.engine, run.gpu, run.weight_dtype, run.regime),
        ):
            groups.setdefault(key, []).append(r)
    out: dict[str, dict] = {}
    for key, rs in sorted(groups.items()):
        entry: dict[str, float | int] = {"runs": len(rs)}
        for k in KEYS:
            e = np.array([x[f"{k}_s_err"] for x in rs])
            entry[f"{k}_abs_p90"] = round(float(np.quantile(np.abs(e), BAND_QUANTILE)), 4)
            entry[f"{k}_bias"] = round(float(np.mean(e)), 4)
        out[key] = entry
    return out


@dataclass(frozen=True)
class Band:
    """Relative error band of a prediction (None fields: not validated)."""

    ttft: float | None
    itl: float | None
    latency: float | None
    basis: str  # which validated runs it comes from, or why there is none

    @property
    def validated(self) -> bool:
        return self.itl is not None


@lru_cache(maxsize=1)
def _bands() -> dict[str, dict]:
    try:
        return json.loads(FIT_FILE.read_text()).get("bands", {})
    except (OSError, ValueError):
        return {}


def band_for(engine: str, gpu: str, weight_dtype: str, regime: str) -> Band:
    """The error band of a prediction for this configuration."""
    table = _bands()
    for key in (
        class_key(engine, gpu, weight_dtype, regime),
        class_key(engine, gpu, weight_dtype),
    ):
        e = table.get(key)
        if e:
            what = key.replace("|", ", ")
            return Band(
                ttft=e["ttft_abs_p90"],
                itl=e["itl_abs_p90"],
                latency=e["latency_abs_p90"],
                basis=(
                    f"90th percentile of out-of-sample errors over {e['runs']} measured runs "
                    f"({what})"
                ),
            )
    return Band(
        None,
        None,
        None,
        f"not validated for this configuration ({engine}, {gpu}, "
        f"{dtype_family(weight_dtype)} weights): no measured runs resemble it",
    )

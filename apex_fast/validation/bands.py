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


def prediction_band(
    engine: str,
    gpu: str,
    weight_dtype: str,
    mean_prompt: float,
    mean_output: float,
    dense_decoder: bool = True,
) -> Band:
    """The band of a plan's predictions: validated runs are dense decoder-only models."""
    from apex_fast.validation.runs import regime_of

    if not dense_decoder:
        return Band(
            None,
            None,
            None,
            "not validated for this configuration (the measured runs are all dense "
            "text-generation models; none is MoE or has an encoder)",
        )
    return band_for(engine, gpu, weight_dtype, regime_of(mean_prompt, mean_output))


def band_json(band: Band, ttft_s: float, itl_s: float, latency_s: float) -> dict:
    """`{"validated", "basis", "ttft_band": {"rel", "low_s", "high_s"}, ...}` for the JSON."""

    def one(rel: float | None, v: float) -> dict | None:
        if rel is None:
            return None
        return {"rel": rel, "low_s": v * (1.0 - rel), "high_s": v * (1.0 + rel)}

    return {
        "validated": band.validated,
        "basis": band.basis,
        "ttft_band": one(band.ttft, ttft_s),
        "itl_band": one(band.itl, itl_s),
        "latency_band": one(band.latency, latency_s),
    }


def band_line(band: Band) -> str:
    """One report line."""
    if not band.validated:
        return f"Accuracy: {band.basis}"
    return (
        f"Accuracy: TTFT +/-{100 * band.ttft:.0f}%, ITL +/-{100 * band.itl:.0f}%, "
        f"latency +/-{100 * band.latency:.0f}% ({band.basis})"
    )


def search_band(sr) -> Band:  # noqa: ANN001 - a search.SearchResult (imported lazily)
    """The band of a search's best plan."""
    w = sr.workload
    plan = sr.best.result.plan
    return prediction_band(
        getattr(sr.options, "engine", "vllm-0.6"),
        sr.cluster.device.name,
        plan.weight_dtype,
        float(w.prompt.mean()),
        float(w.output.mean()),
        dense_decoder=sr.model.arch == "decoder" and not sr.model.is_moe,
    )

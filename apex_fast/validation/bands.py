"""Error bands: how far off a prediction may be, from out-of-sample validation residuals.

Each measured run belongs to a class (engine, GPU, weight dtype family, load regime). Its
residual is taken from the leave-one-family-out replay, i.e. with host parameters fitted without
that run's model family, so a band says how well the model transfers, not how well it was fitted.
Published measurements of other engines (apex_fast/data, replayed with nothing fitted to them)
add classes of their own for dense models. A band is the 90th percentile of the absolute
relative errors of the runs in the class (with the mean signed error as the bias). A configuration matches a class when engine, GPU and dtype family
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


@dataclass(frozen=True)
class _Source:
    """What band_table needs to know of a measured configuration."""

    engine: str
    gpu: str
    weight_dtype: str
    regime: str


def published_band_rows(rows: list[dict], published: list[dict]) -> list[dict]:
    """Replayed published measurements (validation.published) in band_table's row format."""
    from apex_fast.validation.published import row_dtype
    from apex_fast.validation.runs import regime_of

    out = []
    for src, r in zip(published, rows, strict=True):
        if "skipped" in r or r.get("class") != "dense":
            continue
        wdt = row_dtype(src["weight_dtype"])
        regime = regime_of(float(src["input_len"]), float(src["output_len"]))
        row = {"run": _Source(src["engine_profile"], src["gpu"], wdt, regime)}
        for key, cols in (
            ("ttft", ("ttft_mean_ms", "ttft_median_ms")),
            ("itl", ("itl_mean_ms", "tpot_mean_ms")),
        ):
            for c in cols:
                if f"{c}_err" in r:
                    row[f"{key}_s_err"] = r[f"{c}_err"]
                    break
        if "itl_s_err" in row and "ttft_s_err" in row:
            out.append(row)
    return out


def band_table(rows: list[dict]) -> dict[str, dict]:
    """Bands per class and per class+regime from replay rows (validation.fit.errors, or
    published_band_rows, which carry no latency)."""
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
            e = np.array([x[f"{k}_s_err"] for x in rs if f"{k}_s_err" in x])
            if e.size == 0:
                entry[f"{k}_abs_p90"] = None
                entry[f"{k}_bias"] = None
                continue
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
        if e and e.get("itl_abs_p90") is not None:
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


def band_rel_json(band: Band) -> dict:
    """The band as relative errors only (for answers that are rates, not latencies)."""
    return {
        "validated": band.validated,
        "basis": band.basis,
        "ttft_rel": band.ttft,
        "itl_rel": band.itl,
        "latency_rel": band.latency,
    }


def band_line(band: Band) -> str:
    """One report line."""
    if not band.validated:
        return f"Accuracy: {band.basis}"
    parts = [f"TTFT +/-{100 * band.ttft:.0f}%", f"ITL +/-{100 * band.itl:.0f}%"]
    if band.latency is not None:
        parts.append(f"latency +/-{100 * band.latency:.0f}%")
    return f"Accuracy: {', '.join(parts)} ({band.basis})"


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

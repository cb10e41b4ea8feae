"""Fit the host parameters of the step-time model once, jointly, and leave-one-family-out.

Reads the bundled validation runs (apex_fast/validation/data: vLLM 0.6.0 on 8x H100 serving
Llama-3.1-70B in bf16 and Mistral-Large-2407 in W8A8 FP8 with an FP8 KV cache), fits the three
host parameters of apex_fast/sim/step_time.py by a bounded pattern search
(apex_fast/validation/fit.py), and writes profile_data/step_time_fit.json with:
- the joint fit (both families; the parameters the tool uses),
- one fit per family (used to predict the other family: the leave-one-family-out check),
- error bands from the leave-one-family-out residuals and from the replayed published
  measurements of every engine (apex_fast/validation/bands.py).

Run from the project root: `python bench/fit_step_time.py` (about a minute).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sys

from apex_fast.data import published_measurements
from apex_fast.sim.step_time import FIT_FILE, HostParams, fit_data
from apex_fast.validation.bands import band_table, published_band_rows
from apex_fast.validation.fit import errors, fit
from apex_fast.validation.published import replay_row
from apex_fast.validation.replay import prepare
from apex_fast.validation.runs import REQUESTS_FILE, RUNS_FILE, bundled_runs

# start of every search: the middle of the plausible ranges' lower halves (fixed, documented)
START = HostParams(host_step_s=3.0e-3, host_frontend_seq_s=100e-6, host_op_s=15e-6)
FREE = ("host_step_s", "host_frontend_seq_s", "host_op_s")


def _digest() -> str:
    h = hashlib.sha256()
    for p in (RUNS_FILE, REQUESTS_FILE):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    preps = [prepare(r) for r in bundled_runs()]
    fams = sorted({p.run.family for p in preps})
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    say(
        f"{len(preps)} runs: "
        + ", ".join(f"{f} {sum(p.run.family == f for p in preps)}" for f in fams)
    )
    joint, f_joint = fit(preps, START, FREE)
    say(f"joint: objective {f_joint:.4f} {joint.as_dict()}")
    per_family = {}
    lofo_rows = []
    for held in fams:
        train = [p for p in preps if p.run.family != held]
        test = [p for p in preps if p.run.family == held]
        h, f = fit(train, START, FREE)
        say(f"fit without {held}: objective {f:.4f} {h.as_dict()}")
        per_family[held] = {
            "params": h.as_dict(),
            "objective": round(f, 5),
            "fitted_on": sorted({p.run.family for p in train}),
        }
        lofo_rows += errors(test, h)
    today = datetime.date.today().isoformat()
    data = {
        "_about": (
            "Host-side step-time parameters (apex_fast/sim/step_time.py), fitted by "
            "bench/fit_step_time.py on the bundled validation runs; do not edit by hand. "
            "'leave_one_family_out' holds, for each family, the parameters fitted WITHOUT it "
            "(used by `apex.py validate` to predict it out of sample) and 'bands' the error "
            "bands derived from those out-of-sample residuals."
        ),
        "engines": {
            "vllm-0.6": {
                "params": joint.as_dict(),
                "fit": (
                    f"joint fit on {len(preps)} vLLM 0.6.0 runs on 8x H100 "
                    f"({', '.join(fams)}), bench/fit_step_time.py, {today}"
                ),
                "objective": round(f_joint, 5),
                "data_sha256_16": _digest(),
            }
        },
        "start": START.as_dict(),
        "leave_one_family_out": per_family,
        "bands": {},
    }
    FIT_FILE.write_text(json.dumps(data, indent=2) + "\n")
    fit_data.cache_clear()  # the published replay below uses the new joint fit
    published = published_measurements()
    pub_rows = published_band_rows([replay_row(r) for r in published], published)
    data["bands"] = band_table(lofo_rows + pub_rows)
    FIT_FILE.write_text(json.dumps(data, indent=2) + "\n")
    say(f"wrote {FIT_FILE}")


if __name__ == "__main__":
    main()

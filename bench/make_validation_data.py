"""Write the project's bundled validation data from the reference measurements.

Reads `../shared/reference/measured_llama.csv`, `measured_mistral.csv` and
`engine_lengths.csv.gz` (real vLLM 0.6.0 serving runs on 8x H100-SXM-80GB) and writes, in this
project's own compact format (apex_fast/validation/runs.py documents it):

- `apex_fast/validation/data/runs.csv`: one row per measured server with the settings the
  simulator needs (parsed from the launch line) and the three measured figures;
- `apex_fast/validation/data/requests.parquet`: the engine's real per-request prompt and output
  lengths and arrival offsets of every run (`run_id`, `arrival_s`, `prompt`, `output`).

Run from the project root: `python bench/make_validation_data.py [--reference DIR]`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from apex_fast.validation.runs import DATA_DIR, REQUESTS_FILE, RUNS_FILE, build_from_reference

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, default=ROOT.parent / "shared" / "reference")
    args = ap.parse_args()
    runs, reqs = build_from_reference(args.reference)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    runs.write_csv(RUNS_FILE)
    reqs.write_parquet(REQUESTS_FILE, compression="zstd", compression_level=19)
    print(f"{runs.height} runs, {reqs.height} requests -> {DATA_DIR}")


if __name__ == "__main__":
    main()

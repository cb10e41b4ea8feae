"""CI speed guard: run bench/search.py, bench/kernel.py and bench/startup.py and fail only if
a figure is more than FACTOR (5x) worse than the figure documented in bench/baseline.json
(bench/README.md).

Shared CI machines are noisy, so the floors are generous: a rate must stay above 1/5 of its
documented value, a time below 5x. Exit code 1 on a miss, 0 otherwise.
Usage: python bench/ci_guard.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_json(script: str, *args: str) -> dict:
    cmd = [sys.executable, str(HERE / script), "--json", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=HERE.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def check(measured: dict, baseline: dict, factor: float) -> list[str]:
    failures = []
    for name, spec in baseline.items():
        if name not in measured:
            print(f"  {name}: not measured (skipped)")
            continue
        doc, got = float(spec["value"]), float(measured[name])
        if spec["better"] == "higher":
            floor = doc / factor
            ok = got >= floor
            limit = f">= {floor:.4g}"
        else:
            floor = doc * factor
            ok = got <= floor
            limit = f"<= {floor:.4g}"
        print(
            f"  {name}: {got:.4g} (documented {doc:.4g}, must be {limit}) {'ok' if ok else 'FAIL'}"
        )
        if not ok:
            failures.append(name)
    return failures


def main() -> int:
    spec = json.loads((HERE / "baseline.json").read_text())
    factor = float(spec.get("factor", 5.0))
    measured: dict = {}
    measured |= run_json("search.py", "--repeat", "3")
    measured |= run_json("kernel.py", "--repeat", "3", "--no-oracle")
    measured |= run_json("startup.py", "--repeat", "3")
    failures = check(measured, spec["figures"], factor)
    if failures:
        print(f"speed guard: {len(failures)} figure(s) more than {factor:g}x worse: {failures}")
        return 1
    print("speed guard: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Start-up benchmark: wall and CPU time of short command lines in fresh processes.

Runs `python apex.py models`, `python apex.py gpus`, the 2-GPU example of the README
(`plan --model llama3-70b --num-gpus-per-node 2 --prompt-len 128 --output-len 2048 --all`) and a
`plan` with an unknown model (the one-line error, exit code 2),
each in a fresh process, after one warm-up run per command (Numba cache filled). With
`--baseline REF` the same commands also run on the tree of git revision REF (extracted to a
temporary folder with `git archive`), interleaved with this tree's runs so both see the same
machine load; the figures are the minimum over `--repeat` runs and the ratio old / new.
CPU time (user + system of the child) is steadier than wall time on a shared machine.
The children run with PYTHONDONTWRITEBYTECODE unset, so the warm-up leaves .pyc files as any
installed copy has them.

`--old-path DIR` puts DIR first on the baseline tree's import path (e.g. a folder holding the
Typer version that tree's pyproject resolves to, `pip install --target DIR typer==X`).

Usage: python bench/startup.py [--baseline REF [--old-path DIR]] [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "models": ["models"],
    "gpus": ["gpus"],
    "plan_2gpu_example": [
        "plan", "--model", "llama3-70b", "--num-gpus-per-node", "2", "--prompt-len", "128",
        "--output-len", "2048", "--all", "--quiet",
    ],
    # bad input: the one-line error (exit code 2) before any simulation
    "plan_bad_model": ["plan", "--model", "no-such-model", "--num-gpus-per-node", "8"],
    "plan_help": ["plan", "--help"],
}  # fmt: skip


def extract(ref: str, dest: Path) -> Path:
    """The tree of `ref` in dest/tree, laid out as the editable install maps it."""
    blob = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=ROOT, check=True, capture_output=True
    ).stdout
    tree = dest / "tree"
    tree.mkdir()
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(tree, filter="data")
    # the top-level kernels/ folder is installed as apex_fast.kernels (pyproject.toml)
    link = tree / "apex_fast" / "kernels"
    if not link.exists():
        link.symlink_to(tree / "kernels", target_is_directory=True)
    return tree


def run_once(tree: Path, args: list[str], first: str | None = None) -> tuple[float, float]:
    """(wall s, CPU s) of one fresh `python apex.py ARGS` in `tree` (`first`: a folder put
    before the tree on the import path)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (first, str(tree)) if p))
    # a warm machine has the .pyc files: let the warm-up write them (a shell that sets
    # PYTHONDONTWRITEBYTECODE would otherwise have every run compile ~100 modules from source)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    rc = subprocess.run(
        [sys.executable, str(tree / "apex.py"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tree,
        env=env,
    ).returncode
    if rc not in (0, 2):  # 2: the bad-input case
        raise SystemExit(f"{tree}: apex.py {' '.join(args)} exited with {rc}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def bench_args(doc: str, repeat: int) -> argparse.Namespace:
    """The options these timing scripts share: --baseline REV, --repeat N, --json."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--baseline", help="git revision to compare with (e.g. main)")
    ap.add_argument("--old-path", help="folder put first on the baseline's import path")
    ap.add_argument("--repeat", type=int, default=repeat)
    ap.add_argument("--json", action="store_true", help="print one JSON line of figures")
    return ap.parse_args()


def trees_to_time(baseline: str | None, tmp: Path) -> dict[str, Path]:
    """This checkout ("new") and, given a baseline revision, that revision extracted ("old")."""
    if not baseline:
        return {"new": ROOT}
    return {"old": extract(baseline, tmp), "new": ROOT}


def main() -> None:
    a = bench_args(__doc__, 5)
    with tempfile.TemporaryDirectory(prefix="apex-startup-") as tmp:
        trees = trees_to_time(a.baseline, Path(tmp))
        first = {"old": getattr(a, "old_path", None)}
        for label, tree in trees.items():  # warm-up: Numba cache, .pyc files
            for args in COMMANDS.values():
                run_once(tree, args, first.get(label))
        best: dict[tuple[str, str], tuple[float, float]] = {}
        for _ in range(a.repeat):
            for cmd, args in COMMANDS.items():
                for label, tree in trees.items():
                    w, c = run_once(tree, args, first.get(label))
                    bw, bc = best.get((label, cmd), (float("inf"), float("inf")))
                    best[(label, cmd)] = (min(bw, w), min(bc, c))
    load = os.getloadavg()[0]
    figures = {f"startup_{cmd}_wall_s": best[("new", cmd)][0] for cmd in COMMANDS}
    if a.json:
        print(json.dumps(figures))
        return
    print(f"best of {a.repeat} fresh processes, load average {load:.1f}, {os.cpu_count()} cores")
    head = f"{'command':<20} {'new wall':>9} {'new CPU':>8}"
    if a.baseline:
        head += f" {'old wall':>9} {'old CPU':>8} {'old/new wall':>13} {'old/new CPU':>12}"
    print(head)
    for cmd in COMMANDS:
        w, c = best[("new", cmd)]
        line = f"{cmd:<20} {w:>8.3f}s {c:>7.3f}s"
        if a.baseline:
            ow, oc = best[("old", cmd)]
            line += f" {ow:>8.3f}s {oc:>7.3f}s {ow / w:>12.2f}x {oc / c:>11.2f}x"
        print(line)


if __name__ == "__main__":
    main()

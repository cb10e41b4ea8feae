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

`--phases` instead splits the CPU time of the 2-GPU example in one fresh process into its
phases (imports, loading the cached kernel, the first kernel run, Polars, the rest), the
minimum of each over `--repeat` processes (bench/README.md, "Start-up of the 2-GPU example").

Usage: python bench/startup.py [--baseline REF [--old-path DIR]] [--repeat N] [--json]
       python bench/startup.py --phases [--repeat N]
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


def bench_args(doc: str, repeat: int, phases: bool = False) -> argparse.Namespace:
    """The options these timing scripts share: --baseline REV, --repeat N, --json (and
    --phases for this script)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--baseline", help="git revision to compare with (e.g. main)")
    ap.add_argument("--old-path", help="folder put first on the baseline's import path")
    ap.add_argument("--repeat", type=int, default=repeat)
    ap.add_argument("--json", action="store_true", help="print one JSON line of figures")
    if phases:
        ap.add_argument("--phases", action="store_true", help="CPU time of each phase")
    return ap.parse_args()


# One fresh process: CPU time (time.process_time) at the end of each phase of the 2-GPU
# example; the kernel's first call is split into argument typing, cache load and the run
PHASES = r"""
import contextlib, io, json, sys, time
marks = []
def mark(name):
    marks.append((name, time.process_time()))
mark("start")
import typer
mark("import typer")
import apex_fast.cli.plan, apex_fast.cli.root
mark("import apex_fast.cli")
import numpy
mark("import numpy")
import apex_fast.planner, apex_fast.report.text
mark("import apex_fast (planner, search, sim, report)")
import numba
mark("import numba")
import apex_fast.kernels.batching
mark("import the kernel modules")
import apex_fast.search.rank as rank
import apex_fast.sim.kernel_load as kl
from numba.core.typing.typeof import typeof
kernel = kl.batching_kernel()
def first_call(*args):
    mark("options, model, workload, plans, cost tables")
    sig = tuple(typeof(x) for x in args)
    mark("kernel: typing its arguments (Numba typeof)")
    kernel.compile(sig)
    mark("kernel: loading it from the cache")
    kl._READY[0] = kernel
    out = kernel(*args)
    mark("kernel: first run")
    return out
kl._READY[0] = first_call
metrics = rank.compute_metrics
def first_metrics(*args, **kw):
    rank.compute_metrics = metrics
    mark("rest of plan 1")
    import polars
    mark("import polars")
    return metrics(*args, **kw)
rank.compute_metrics = first_metrics
from apex_fast.entry import main
with contextlib.redirect_stdout(io.StringIO()):
    main(sys.argv[1:])
mark("metrics, other plans, report")
print(json.dumps([(b[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])]))
"""


def phases(repeat: int) -> None:
    """Print the minimum CPU time of each phase of the 2-GPU example over `repeat` runs."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    args = [a for a in COMMANDS["plan_2gpu_example"] if a != "--quiet"]
    best: dict[str, float] = {}
    totals = []
    for i in range(repeat + 1):  # the first run writes .pyc files and fills the cache
        out = subprocess.run(
            [sys.executable, "-c", PHASES, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = json.loads(out.strip().splitlines()[-1])
        if i == 0:
            continue
        totals.append(sum(t for _, t in rows))
        for name, t in rows:
            best[name] = min(best.get(name, float("inf")), t)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(
        f"CPU seconds per phase, minimum of {repeat} fresh processes, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'Python start (python -c pass)':<50} {start:6.3f}")
    for name, t in best.items():
        print(f"{name:<50} {t:6.3f}")
    print(f"{'total of one process (best), after Python start':<50} {min(totals):6.3f}")


def trees_to_time(baseline: str | None, tmp: Path) -> dict[str, Path]:
    """This checkout ("new") and, given a baseline revision, that revision extracted ("old")."""
    if not baseline:
        return {"new": ROOT}
    return {"old": extract(baseline, tmp), "new": ROOT}


def main() -> None:
    a = bench_args(__doc__, 5, phases=True)
    if a.phases:
        phases(a.repeat)
        return
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

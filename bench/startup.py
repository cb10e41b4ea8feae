"""Start-up benchmark: wall and CPU time of short command lines in fresh processes.

Runs `python apex.py models`, `python apex.py gpus`, the 2-GPU example of the README
(`plan --model llama3-70b --num-gpus-per-node 2 --prompt-len 128 --output-len 2048 --all`) and a
`plan` with an unknown model (the one-line error, exit code 2),
each in a fresh process, after one warm-up run per command (Numba cache filled). With
`--baseline REF` the same commands also run on the tree of git revision REF (extracted to a
temporary folder with `git archive`), interleaved with this tree's runs so both see the same
machine load; the figures are the minimum and the median over `--repeat` runs and the ratios
old / new. `--old-env VAR=VALUE` sets a variable for the baseline's runs only
(`--baseline HEAD --old-env APEX_FORK=0`: this tree with and without the kernel's process).
CPU time (user + system of the child) is steadier than wall time on a shared machine.
The children run with PYTHONDONTWRITEBYTECODE unset, so the warm-up leaves .pyc files as any
installed copy has them.

`--old-path DIR` puts DIR first on the baseline tree's import path (e.g. a folder holding the
Typer version that tree's pyproject resolves to, `pip install --target DIR typer==X`).

`--phases` instead splits the CPU time of the 2-GPU example in one fresh process into its
phases (imports, loading the cached kernel, the first kernel run, Polars, the rest), the
minimum of each over `--repeat` processes (bench/README.md, "Start-up of the 2-GPU example").

`--fork-split` runs the 2-GPU example with the kernel's child forked (APEX_FORK=1) and
alternately in one process (APEX_FORK=0), and prints the median CPU time of each side: before
the fork, the parent until the child's first answer (it imports Polars meanwhile), the child
until that answer, the parent after it; their critical path (before + the longer side + after)
is what the wall time comes to with a second core free, whatever the machine's load now.

Usage: python bench/startup.py [--baseline REF [--old-path DIR] [--old-env VAR=VALUE]]
                               [--repeat N] [--json]
       python bench/startup.py --phases [--repeat N]
       python bench/startup.py --fork-split [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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


def run_once(
    tree: Path, args: list[str], first: str | None = None, extra_env: dict[str, str] | None = None
) -> tuple[float, float]:
    """(wall s, CPU s) of one fresh `python apex.py ARGS` in `tree` (`first`: a folder put
    before the tree on the import path; `extra_env`: variables set for the run)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (first, str(tree)) if p))
    env.update(extra_env or {})
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
    --phases and --old-env for this script)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--baseline", help="git revision to compare with (e.g. main)")
    ap.add_argument("--old-path", help="folder put first on the baseline's import path")
    ap.add_argument("--repeat", type=int, default=repeat)
    ap.add_argument("--json", action="store_true", help="print one JSON line of figures")
    if phases:  # this script's own options
        ap.add_argument("--phases", action="store_true", help="CPU time of each phase")
        ap.add_argument(
            "--fork-split",
            action="store_true",
            help="CPU time of each side with the kernel's child (APEX_FORK=1) vs one process",
        )
        ap.add_argument(
            "--old-env",
            action="append",
            default=[],
            metavar="VAR=VALUE",
            help="environment variable set for the baseline's runs (repeatable), e.g. "
            "APEX_FORK=0 with --baseline HEAD: this tree with and without the kernel's process",
        )
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


# One fresh process of the 2-GPU example with the kernel's child forked (APEX_FORK=1): CPU time
# (time.process_time) of each side between the events that order them; with APEX_FORK=0 the
# whole run's CPU time
FORK_SPLIT = r"""
import json, os, sys, time
import apex_fast.sim.kernel_process as kp
import apex_fast.entry as entry
cpu = {}
start, serve, call = kp.start, kp._serve, kp.call
def timed_start():
    cpu["before fork"] = time.process_time()
    return start()
def timed_serve(req, rep):
    t0 = time.process_time()
    w = os.fdopen(int(os.environ["SPLIT_FD"]), "w")
    import apex_fast.sim.kernel_load as kl
    local = kl.local_kernel
    def first_answer():
        kernel = local()
        def run(*args):
            out = kernel(*args)
            if not w.closed:
                w.write(json.dumps(time.process_time() - t0)); w.close()
            return out
        return run
    kl.local_kernel = first_answer
    return serve(req, rep)
def timed_call(args):
    first = "parent to first answer" not in cpu
    out = call(args)
    if first:  # the parent's CPU until the answer: its own work and the Polars import
        cpu["parent to first answer"] = time.process_time() - cpu["before fork"]
    return out
kp.start, kp._serve, kp.call = timed_start, timed_serve, timed_call
def done(code):
    cpu["total"] = time.process_time()
    kp.stop()  # ends and reaps the child: its CPU time is then the children's
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu["child total"] = ru.ru_utime + ru.ru_stime
    sys.__stdout__.write(json.dumps(cpu) + "\n")
    sys.__stdout__.flush()
    os._exit(code)
entry.exit_now = done
sys.argv = ["apex.py", *sys.argv[1:]]
import contextlib, io
out = io.StringIO()
with contextlib.redirect_stdout(out):
    entry.run()
"""


def fork_split(repeat: int) -> None:
    """CPU seconds of each side of the 2-GPU example with the kernel's child, and of the same
    run in one process, median of `repeat` fresh processes each (alternating)."""
    base = dict(os.environ, PYTHONPATH=str(ROOT))
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    args = [a for a in COMMANDS["plan_2gpu_example"] if a != "--quiet"]
    rows: dict[str, list[float]] = {}
    for i in range(repeat + 1):  # the first round writes .pyc files and fills the cache
        r, w = os.pipe()
        env = dict(base, APEX_FORK="1", SPLIT_FD=str(w))
        p = subprocess.run(
            [sys.executable, "-c", FORK_SPLIT, *args], cwd=ROOT, env=env, pass_fds=(w,),
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        os.close(w)
        with os.fdopen(r) as f:
            child = float(f.read())
        cpu = json.loads(p.stdout.strip().splitlines()[-1])
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        env = dict(base, APEX_FORK="0")
        subprocess.run(
            [sys.executable, str(ROOT / "apex.py"), *args], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, check=True,
        )  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if i == 0:
            continue
        before_fork, parent = cpu["before fork"], cpu["parent to first answer"]
        tail = cpu["total"] - before_fork - parent
        plain = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        for name, t in (
            ("before the fork (Python, NumPy, shared modules)", before_fork),
            ("parent: CLI, plans, costs, Polars, to the first answer", parent),
            ("child: Numba, kernel load, first stream", child),
            ("parent: after the first answer (metrics, other plans, report)", tail),
            ("critical path: before + max(parent, child) + after", before_fork + max(parent, child) + tail),
            ("both processes together", cpu["total"] + cpu["child total"]),
            ("one process (APEX_FORK=0), total", plain),
        ):  # fmt: skip
            rows.setdefault(name, []).append(t)
    print(
        f"CPU seconds, median of {repeat} fresh processes each, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for name, ts in rows.items():
        print(f"{name:<60} {statistics.median(ts):6.3f}")


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
    if a.fork_split:
        fork_split(a.repeat)
        return
    old_env = dict(kv.split("=", 1) for kv in getattr(a, "old_env", []))
    with tempfile.TemporaryDirectory(prefix="apex-startup-") as tmp:
        trees = trees_to_time(a.baseline, Path(tmp))
        first = {"old": getattr(a, "old_path", None)}
        envs = {"old": old_env}
        for label, tree in trees.items():  # warm-up: Numba cache, .pyc files
            for args in COMMANDS.values():
                run_once(tree, args, first.get(label), envs.get(label))
        runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(a.repeat):
            for cmd, args in COMMANDS.items():
                for label, tree in trees.items():
                    w, c = run_once(tree, args, first.get(label), envs.get(label))
                    runs.setdefault((label, cmd), []).append((w, c))
    load = os.getloadavg()[0]
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    med = {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for k, v in runs.items()
    }
    figures = {f"startup_{cmd}_wall_s": best[("new", cmd)][0] for cmd in COMMANDS}
    if a.json:
        print(json.dumps(figures))
        return
    print(f"{a.repeat} fresh processes each, load average {load:.1f}, {os.cpu_count()} cores")
    for title, fig in (("best", best), ("median", med)):
        head = f"{title + ' of the runs':<20} {'new wall':>9} {'new CPU':>8}"
        if a.baseline:
            head += f" {'old wall':>9} {'old CPU':>8} {'old/new wall':>13} {'old/new CPU':>12}"
        print(head)
        for cmd in COMMANDS:
            w, c = fig[("new", cmd)]
            line = f"{cmd:<20} {w:>8.3f}s {c:>7.3f}s"
            if a.baseline:
                ow, oc = fig[("old", cmd)]
                line += f" {ow:>8.3f}s {oc:>7.3f}s {ow / w:>12.2f}x {oc / c:>11.2f}x"
            print(line)


if __name__ == "__main__":
    main()

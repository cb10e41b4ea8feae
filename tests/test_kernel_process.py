"""The batching kernel in a forked child process (apex_fast/sim/kernel_process.py): the same
results as in one process, a fallback when the child is gone, Ctrl-C and bad input with the
child running, and no process left behind."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apex_fast import entry
from apex_fast.sim import kernel_process

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
EXAMPLE = [
    "plan", "--model", "llama3-70b", "--num-gpus-per-node", "2", "--prompt-len", "128",
    "--output-len", "2048", "--all",
]  # fmt: skip

# a fresh interpreter: fork the child, run streams through it (the small stream of
# test_kernel_load, which preempts, and one of 12000 requests whose records need more than one
# pipe's worth of bytes), then the same streams in this process; print what the parent loaded
# and whether the two runs gave the same bytes
STREAMS = f"""
import json, os, signal, sys
import numpy as np
sys.path.insert(0, {str(TESTS)!r})
from apex_fast.sim import kernel_process as kp
kp.preload()
started = kp.start()
pid = kp._CHILD[0][1]
from test_kernel_load import ARRIVAL, PROMPT, OUTPUT, CFG, _costs
from apex_fast.sim.stream import SchedulerConfig, run_stream
rng = np.random.default_rng(7)
n = 12000
big = (np.sort(rng.uniform(0, 30, n)), rng.integers(1, 900, n), rng.integers(1, 400, n))
cases = [(np.array(ARRIVAL), np.array(PROMPT), np.array(OUTPUT), SchedulerConfig(**CFG)),
         big + (SchedulerConfig(num_blocks=4000, max_num_seqs=4, budget=256),)]
def run_all():
    out = []
    for a, p, o, cfg in cases:
        r = run_stream(a, p, o, cfg, _costs())
        out.append({{k: v.tobytes().hex() for k, v in vars(r).items() if hasattr(v, "tobytes")}})
    return out
MODE = sys.argv[1]
if MODE == "dead":
    os.kill(pid, signal.SIGKILL)  # the child is gone before the first call
remote = run_all()
report = {{"started": started, "numba": "numba" in sys.modules, "serves": kp.serves(),
           "records": int(sum(len(r["rec_start"]) // 16 for r in remote))}}
if MODE == "child":  # before a process pool forks: the kernel the child ran, loaded here
    import apex_fast.sim.kernel_load as kl
    kl.load_here()
    report["loaded_here"] = len(kl.local_kernel().overloads)
kp.stop()
try:
    os.waitpid(pid, os.WNOHANG)
    report["reaped"] = False
except ChildProcessError:
    report["reaped"] = True
report["same"] = run_all() == remote
print(json.dumps(report))
"""


def _streams(mode: str) -> dict:
    env = dict(os.environ, APEX_FORK="1")
    out = subprocess.run(
        [sys.executable, "-c", STREAMS, mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=TESTS,
        env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_streams_run_by_the_child_give_the_same_bytes_and_the_parent_never_loads_numba():
    got = _streams("child")
    assert got["started"] is True
    assert got["numba"] is False  # every stream ran in the child
    assert got["serves"] is True
    assert got["records"] * 88 > kernel_process.PIPE_BYTES  # replies larger than a pipe holds
    assert got["reaped"] is True  # stop() ends and waits for the child
    assert got["loaded_here"] == 1  # load_here: the signature the child ran, from the cache
    assert got["same"] is True  # identical to running the kernel here


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_dead_child_leaves_the_kernel_to_this_process():
    got = _streams("dead")
    assert got["started"] is True
    assert got["numba"] is True  # the parent ran the kernel itself
    assert got["serves"] is False  # and no longer uses the child
    assert got["same"] is True


def test_fork_mode_from_the_environment(monkeypatch):
    fork = hasattr(os, "fork")
    running = ["1/99"]  # tasks running now, this one included (/proc/loadavg)
    real_open = open

    def fake_open(path, *a, **k):
        if path == "/proc/loadavg":
            return io.StringIO(f"0.0 0.0 0.0 {running[0]} 1\n")
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(kernel_process, "usable_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.9, 0.9, 0.9), raising=False)
    monkeypatch.setenv("APEX_FORK", "0")
    assert kernel_process.enabled() is False
    monkeypatch.setenv("APEX_FORK", "auto")
    assert kernel_process.enabled() is fork
    monkeypatch.delenv("APEX_FORK")
    assert kernel_process.enabled() is fork
    running[0] = "2/99"  # another task runs on the second core
    assert kernel_process.enabled() is False
    running[0] = "1/99"
    monkeypatch.setattr(os, "getloadavg", lambda: (1.6, 0.9, 0.9))
    assert kernel_process.enabled() is False  # busy over the last minute
    monkeypatch.setattr(kernel_process, "usable_cores", lambda: 4)
    running[0] = "3/99"
    assert kernel_process.enabled() is fork  # two cores of four free
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(kernel_process, "usable_cores", lambda: 1)
    running[0] = "1/99"
    assert kernel_process.enabled() is False  # one core: nothing to overlap
    monkeypatch.setenv("APEX_FORK", "1")
    assert kernel_process.enabled() is fork


def test_only_a_plan_that_simulates_here_forks(monkeypatch):
    calls = []
    monkeypatch.setattr(kernel_process, "enabled", lambda: True)
    monkeypatch.setattr(kernel_process, "preload", lambda: calls.append("preload"))
    monkeypatch.setattr(kernel_process, "start", lambda: calls.append("start"))
    for args in (
        ["models"],
        [],
        ["capacity", "--model", "llama-7b"],
        ["plan", "--help"],
        ["plan", "--model", "llama-7b", "--workers", "2"],
        ["plan", "--model", "llama-7b", "--workers=2"],
        ["plan", "--model", "llama-7b", "--ray", "auto"],
    ):
        entry._fork_kernel_child(args)
        assert calls == [], args
    entry._fork_kernel_child(["plan", "--model", "llama-7b"])
    assert calls == ["preload", "start"]


def _apex(args: list[str], fork: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, APEX_FORK=fork)
    return subprocess.run(
        [sys.executable, "apex.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_the_readme_example_prints_the_same_report_with_and_without_the_child(tmp_path):
    forked = _apex([*EXAMPLE, "--json", str(tmp_path / "a.json")], "1")
    plain = _apex([*EXAMPLE, "--json", str(tmp_path / "b.json")], "0")
    assert forked.returncode == plain.returncode == 0, forked.stderr + plain.stderr
    assert forked.stdout == plain.stdout
    assert forked.stderr.replace("a.json", "b.json") == plain.stderr
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_bad_input_with_the_child_forked_is_one_line_exit_2_and_no_process_left():
    p = subprocess.Popen(
        [sys.executable, "apex.py", "plan", "--model", "no-such-model", "--num-gpus-per-node", "8"],
        cwd=ROOT,
        env=dict(os.environ, APEX_FORK="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: unknown model")
    assert _group_gone(p.pid)  # the child was ended and reaped with the command


def _group(pgid: int) -> list[int]:
    """The processes of process group `pgid` (Linux: /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("delay_s", [0.0, 0.3, 1.0])
def test_ctrl_c_with_the_child_forked_exits_130_and_leaves_no_process(delay_s: float):
    # Ctrl-C once the child exists, plus delay_s: the child loads Numba or simulates while this
    # process parses options, imports Polars or computes metrics (which, depends on the machine)
    p = subprocess.Popen(
        [sys.executable, "apex.py", *EXAMPLE, "--num-requests", "100000"],
        cwd=ROOT,
        env=dict(os.environ, APEX_FORK="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group, as a terminal's Ctrl-C signals
    )
    deadline = time.monotonic() + 60
    while len(_group(p.pid)) < 2 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(_group(p.pid)) == 2  # the command and its kernel's child
    time.sleep(delay_s)
    os.killpg(p.pid, signal.SIGINT)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail("the run did not stop within 60 s of Ctrl-C")
    assert p.returncode == 130, err
    assert err == "interrupted\n"
    assert out == ""
    assert _group(p.pid) == []  # the child was ended and reaped before the command exited

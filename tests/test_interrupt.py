"""Ctrl-C is not success: exit 130, one line "interrupted", workers stopped, no partial JSON."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apex_fast.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_interrupt_inside_a_command_exits_130(capsys, monkeypatch, tmp_path: Path) -> None:
    import apex_fast.planner as planner

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(planner, "run_plan", interrupted)
    out_json = tmp_path / "r.json"
    code = main(
        ["plan", "--model", "llama-7b", "--num-gpus", "1", "--quiet", "--json", str(out_json)]
    )
    out, err = capsys.readouterr()
    assert code == 130
    assert err == "interrupted\n" and out == ""
    assert not out_json.exists()


def _interrupt_after(args: list[str], delay_s: float) -> tuple[int, str, str, int]:
    p = subprocess.Popen(
        [sys.executable, "apex.py", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group, as a terminal's Ctrl-C signals
    )
    time.sleep(delay_s)
    os.killpg(p.pid, signal.SIGINT)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail("the run did not stop within 60 s of Ctrl-C")
    return p.returncode, out, err, p.pid


def _no_children_left(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("delay_s", [0.2, 3.0])
def test_sigint_during_plan_with_worker_pool(tmp_path: Path, delay_s: float) -> None:
    # 0.2 s: while the modules load; 3 s: during the search, with two worker processes (400,000
    # requests: the search takes about 15 s here, 100,000 took under 5 s)
    out_json = tmp_path / "r.json"
    args = [
        "plan",
        "--model",
        "llama3-70b",
        "--num-gpus-per-node",
        "8",
        "--num-requests",
        "400000",
        "--prompt-len",
        "300",
        "--output-len",
        "300",
        "--workers",
        "2",
        "--quiet",
        "--json",
        str(out_json),
    ]
    code, out, err, pgid = _interrupt_after(args, delay_s)
    assert code == 130, err
    assert _no_children_left(pgid)  # the worker processes are gone too
    assert err == "interrupted\n"
    assert out == ""
    assert not out_json.exists()
    assert not list(tmp_path.iterdir())  # no temporary file left either


def test_sigint_during_capacity(tmp_path: Path) -> None:
    out_json = tmp_path / "c.json"
    args = [
        "capacity",
        "--model",
        "llama-7b",
        "--num-gpus-per-node",
        "1",
        # 300,000 synthetic requests and generous SLOs: the rate search runs for about 30 s on
        # this 2-core machine (100,000 took 10 s), long after the signal at 3 s ends it (the
        # 300-request trace used before finished inside 3 s once the kernel got faster)
        "--num-requests",
        "300000",
        "--prompt-len",
        "300",
        "--output-len",
        "300",
        "--top",
        "1",
        "--ttft-slo",
        "3600000",
        "--tpot-slo",
        "3600000",
        "--json",
        str(out_json),
    ]
    code, out, err, _ = _interrupt_after(args, 3.0)
    assert code == 130, err
    assert err.endswith("interrupted\n") and "Traceback" not in err
    assert out == ""
    assert not out_json.exists()

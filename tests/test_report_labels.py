"""Report wording that must say what the numbers are (units, names, counts, notes)."""

from __future__ import annotations

import re

import pytest

import apex_fast.cli as cli
import apex_fast.cli.checks as checks
from apex_fast.cli import main

PLAN = ["plan", "--num-requests", "4", "--prompt-len", "64", "--output-len", "8", "--quiet"]


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*PLAN, *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "args",
    [
        ("--model", "gpt2", "--num-gpus-per-node", "2"),
        ("--model", "mixtral-8x7b", "--num-gpus-per-node", "2"),
        # shapes refused before simulation (heads or experts that do not split 6 or 8 ways)
        # count among the candidates and the infeasible plans alike
        ("--model", "gpt2", "--num-gpus-per-node", "8"),
        ("--model", "llama-7b", "--num-gpus-per-node", "6"),
        ("--model", "mixtral-8x7b", "--num-gpus-per-node", "6"),
    ],
)
def test_candidate_count_adds_up(capsys, args: tuple[str, ...]) -> None:
    code, out, err = _run(capsys, *args, "--all")
    assert code == 0, err
    m = re.search(r"Generated (\d+) decoder candidate plans: (\d+) feasible, (\d+) infeasible", out)
    assert m, out[:500]
    total, feasible, infeasible = map(int, m.groups())
    assert feasible + infeasible == total
    assert out.count("Parallel schedule ") == feasible
    listed = out.split("* Infeasible plans:")[1] if infeasible else ""
    assert listed.count("\n  DP") == infeasible


def test_memory_in_gib(capsys) -> None:
    code, out, _ = _run(capsys, "--model", "llama-7b", "--num-gpus-per-node", "1")
    assert code == 0
    assert "Parameter size per device (GiB)" in out and "(GB)" not in out
    # llama-7b: 6.74e9 parameters x 2 bytes = 12.55 GiB (13.5 GB)
    assert re.search(r"Parameter size per device \(GiB\)\s+12\.6\b", out)


def test_default_clock_is_named(capsys) -> None:
    code, out, _ = _run(capsys, "--model", "gpt2", "--num-gpus-per-node", "1")
    assert code == 0 and "SM clock 1980 MHz (boost, the default)" in out


def test_first_run_compile_note(capsys, monkeypatch) -> None:
    monkeypatch.setattr(checks, "kernel_cache_present", lambda: False)
    code = main(["plan", "--model", "gpt2", "--num-gpus", "1", "--num-requests", "2"])
    _, err = capsys.readouterr()
    assert code == 0
    assert err.count("compiling the simulation kernel") == 1
    code = main([*PLAN, "--model", "gpt2", "--num-gpus", "1"])  # --quiet: nothing
    _, err = capsys.readouterr()
    assert code == 0 and err == ""


def test_kernel_cache_found_after_a_run(capsys) -> None:
    assert main([*PLAN, "--model", "gpt2", "--num-gpus", "1"]) == 0
    capsys.readouterr()
    assert cli.kernel_cache_present()

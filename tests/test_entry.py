"""Process entry point: `models`/`gpus` print the same text as the full CLI, without importing
the command-line framework or the numerical stack; other command lines go to the full CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from apex_fast.cli import main as cli_main
from apex_fast.entry import main as entry_main


def _python(code: str) -> str:
    """Stdout of `code` run by a fresh interpreter (so its imports start from nothing)."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.parametrize("args", [["models"], ["gpus"], ["models", "--json"], ["gpus", "--json"]])
def test_listing_is_the_cli_output(args, capsys):
    assert cli_main(args) == 0
    via_cli = capsys.readouterr().out
    assert entry_main(args) == 0
    assert capsys.readouterr().out == via_cli and via_cli.strip()


def test_listing_imports_nothing_heavy():
    code = (
        "import sys; from apex_fast.entry import main; main(['models']); main(['gpus']); "
        "print(sorted(m for m in ('typer', 'numpy', 'numba', 'polars', 'pydantic') "
        "if m in sys.modules))"
    )
    assert _python(code).strip().splitlines()[-1] == "[]"


def test_other_command_lines_go_to_the_cli(capsys):
    assert entry_main(["models", "--bogus"]) == 2  # the CLI's one-line error, exit code 2
    assert capsys.readouterr().err.startswith("error: ")
    assert entry_main(["plna"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_command_modules_are_imported_only_when_run():
    code = (
        "import sys, io, contextlib\n"
        "from apex_fast.cli import main\n"
        "mods = ('apex_fast.cli.validate', 'apex_fast.cli.profile', 'apex_fast.cli.capacity',\n"
        "        'apex_fast.capacity', 'numpy')\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['gpus'])\n"
        "print([m in sys.modules for m in mods])\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['capacity', '--help'])\n"
        "print([m in sys.modules for m in mods])\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "print([m in sys.modules for m in mods])\n"
    )
    out = _python(code).split("\n")
    assert out[:3] == [
        "[False, False, False, False, False]",
        # the help of a command loads its module, not the domain code behind it
        "[False, False, True, False, False]",
        "[True, True, True, False, True]",  # the command list names them all (trace: numpy)
    ]


def test_bad_input_stops_before_the_kernel_is_loaded():
    code = (
        "import sys, contextlib, io\n"
        "from apex_fast.cli import main\n"
        "with contextlib.redirect_stderr(io.StringIO()):\n"
        "    rc = main(['plan', '--model', 'no-such-model', '--num-gpus-per-node', '8'])\n"
        "print(rc, sorted(m for m in ('numba', 'polars', 'apex_fast.kernels.batching') "
        "if m in sys.modules))\n"
    )
    assert _python(code).strip().splitlines()[-1] == "2 []"


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


EXIT_NOW = (
    "import atexit, sys\n"
    "from apex_fast.entry import exit_now\n"
    "class Teardown:\n"
    "    def __del__(self):\n"
    "        sys.stdout.write('torn down\\n')\n"
    "keep = Teardown()  # a module global: finalised only when the interpreter is torn down\n"
    "atexit.register(lambda: sys.stdout.write('atexit handler\\n'))\n"
    "sys.stdout.write('report\\n')  # still in the buffer (stdout is a pipe)\n"
)


def test_exit_now_runs_atexit_flushes_and_skips_the_teardown():
    p = _run_python(EXIT_NOW + "exit_now(3)\nsys.stdout.write('not reached\\n')\n")
    assert p.returncode == 3
    assert p.stdout == "report\natexit handler\n"  # no "torn down", nothing after the call


def test_exit_now_leaves_the_usual_exit_while_another_thread_runs():
    code = EXIT_NOW + (
        "import threading\n"
        "stop = threading.Event()\n"
        "t = threading.Thread(target=stop.wait)\n"
        "t.start()\n"
        "exit_now(3)\n"
        "sys.stdout.write('returned\\n')\n"
        "stop.set()\n"
    )
    p = _run_python(code)
    assert p.returncode == 0
    assert p.stdout.splitlines() == ["report", "returned", "atexit handler", "torn down"]


def test_apex_py_writes_its_outputs_before_the_fast_exit(tmp_path):
    out_json = tmp_path / "r.json"
    p = subprocess.run(
        [
            sys.executable,
            "apex.py",
            "plan",
            "--model",
            "llama-7b",
            "--num-gpus",
            "1",
            "--num-requests",
            "8",
            "--prompt-len",
            "64",
            "--output-len",
            "8",
            "--quiet",
            "--json",
            str(out_json),
        ],  # fmt: skip
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert "* Optimal schedule for decoder:" in p.stdout
    assert p.stdout.endswith("=" * 80 + "\n")  # the report's last line: all of it was flushed
    assert json.loads(out_json.read_text())  # complete and parseable

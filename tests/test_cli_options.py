"""The options model of the command line: shared options declared once, choices that match
what the domain modules accept, defaults that are the library's, help readable at 80 columns,
and no Typer outside apex_fast/cli/."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import typer

from apex_fast.cli import main
from apex_fast.cli import options as o
from apex_fast.cli import root as cli_app
from apex_fast.cli.plan_request import plan_request
from apex_fast.request import PlanRequest

ROOT = Path(__file__).resolve().parents[1] / "apex_fast"


def _command(name: str):
    module, function = cli_app.COMMANDS[name]
    return getattr(__import__(module, fromlist=[function]), function)


def _params(name: str, args: list[str], monkeypatch) -> dict:
    """The parameters a command function receives for a command line (its work stubbed)."""
    import apex_fast.cli.plan as plan_cmd

    seen: dict = {}

    def stop(p: dict) -> None:
        seen.update(p)
        raise SystemExit(0)

    monkeypatch.setattr(plan_cmd, "check_plan_inputs", lambda ctx, p: stop(p))
    with pytest.raises(SystemExit):
        cli_app.register(name)
        cli_app.app(args=[name, *args], standalone_mode=False)
    return seen


def test_enums_list_what_the_domain_accepts():
    from apex_fast.disagg.deployment import MODES
    from apex_fast.dtypes import canonical_dtype
    from apex_fast.engines import ENGINE_NAMES
    from apex_fast.search import OBJECTIVES
    from apex_fast.sim.prefix import ROUTERS
    from apex_fast.sim.speculative import METHODS
    from apex_fast.workload.generators import KINDS, LENGTH_DISTS

    assert [e.value for e in o.Objective] == list(OBJECTIVES)
    assert [e.value for e in o.Mode] == list(MODES)
    assert [e.value for e in o.Router] == list(ROUTERS)
    assert [e.value for e in o.SpeculativeMethod] == list(METHODS)
    assert [e.value for e in o.Engine] == list(ENGINE_NAMES)
    assert [e.value for e in o.LengthDist] == list(LENGTH_DISTS)
    assert set(KINDS) | {"fixed", "uniform", "lognormal", "multiturn"} == {
        e.value for e in o.TraceKind
    }
    for e in o.WeightDtype:  # every alias offered is one the planner accepts
        canonical_dtype(e.value, allow_int=True)
    for e in o.Dtype:
        canonical_dtype(e.value)


def test_plan_defaults_are_the_requests_defaults(monkeypatch):
    """`plan --model M --num-gpus N` asks exactly what PlanRequest(M, N) asks."""
    p = _params("plan", ["--model", "gpt2", "--num-gpus", "2"], monkeypatch)
    assert plan_request(p) == PlanRequest(model="gpt2", gpus_per_node=2)


def test_launch_settings_are_one_record(monkeypatch):
    p = _params("plan", ["--model", "gpt2", "--num-gpus", "2", "--engine", "SGLang"], monkeypatch)
    p2 = _params("plan", ["--model", "gpt2", "--num-gpus", "2", "--max-batch", "8"], monkeypatch)
    req, req2 = plan_request(p), plan_request(p2)
    assert req.launch.engine == "sglang" and req.launch.max_num_seqs is None
    assert req2.launch.max_num_seqs == 8  # the APEX+ alias fills the engine setting


@pytest.mark.parametrize(
    "param", ["model", "num_gpus_per_node", "num_nodes", "gpu", "tp", "objective", "seed"]
)
def test_shared_options_are_one_declaration(param):
    """plan and capacity annotate a shared option with the same alias from options.py."""
    hints = [
        inspect.signature(_command(c)).parameters[param].annotation for c in ("plan", "capacity")
    ]
    assert hints[0] == hints[1]


@pytest.mark.parametrize("name", list(cli_app.COMMANDS))
def test_help_names_every_option_at_80_columns(capsys, monkeypatch, name):
    monkeypatch.setenv("COLUMNS", "80")
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    cli_app.register(name)
    cmd = typer.main.get_command(cli_app.app).commands[name]
    for param in cmd.params:
        for flag in (*param.opts, *param.secondary_opts):
            assert re.search(rf"(^|[\s,/])({re.escape(flag)})([\s,/]|$)", out, re.M), flag
    assert max(len(line) for line in out.splitlines()) <= 80


def test_no_module_outside_the_cli_imports_typer():
    offenders = [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.py")
        if "cli" not in path.relative_to(ROOT).parts
        and re.search(r"^\s*(import typer|from typer)", path.read_text(), re.M)
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--capacity-factor", "nan"], "--capacity-factor must be"),
        (["--gpu-hour-cost", "inf"], "--gpu-hour-cost must be a finite number"),
        (["--engine", "vllm-9"], "--engine: 'vllm-9' is not one of"),
        (["--mode", "split"], "--mode: 'split' is not one of 'agg', 'disagg', 'both'"),
        (["--num-speculative-tokens", "17"], "--num-speculative-tokens must be"),
    ],
)
def test_typer_checks_say_the_flag_in_one_line(capsys, args, needle):
    base = ["plan", "--model", "gpt2", "--num-gpus", "1", "--num-requests", "2", "--quiet"]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_choices_ignore_case_and_take_dtype_aliases(capsys):
    base = ["plan", "--model", "gpt2", "--num-gpus", "1", "--num-requests", "2", "--quiet"]
    assert main([*base, "--objective", "Energy", "--kv-dtype", "FP8"]) == 0
    out = capsys.readouterr().out
    assert "Ranked by energy" in out and "KV float8" in out

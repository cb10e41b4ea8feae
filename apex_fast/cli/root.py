"""The Typer application: command registration, and `main`, which turns every failure into
one line on stderr and an exit code (2 for bad input, 130 for Ctrl-C, 1 for internal errors).

Each command lives in its own module of this package and is imported only when it runs (or
for the command list of `--help`), so `plan` does not pay for the imports of `validate`.
"""

from __future__ import annotations

import importlib
import re
import sys
import traceback

import typer

from apex_fast.entry import check_interrupted
from apex_fast.errors import ApexError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="apex-fast: plan how to serve an LLM on a GPU cluster (parallelism, batching, "
    "latency, throughput, energy, SLOs).",
    pretty_exceptions_enable=False,
    # plain Click help: option names are never cut at 80 columns, and text in square brackets
    # (`[ray]`) is printed as written instead of being read as Rich markup
    rich_markup_mode=None,
)


@app.callback()
def _group() -> None:
    """A group even when one command is registered (Typer runs a lone command bare)."""


# command name -> (module, function), in the order `--help` lists them
COMMANDS: dict[str, tuple[str, str]] = {
    "plan": ("apex_fast.cli.plan", "plan"),
    "models": ("apex_fast.cli.listing", "models"),
    "gpus": ("apex_fast.cli.listing", "gpus"),
    "validate": ("apex_fast.cli.validate", "validate"),
    "trace": ("apex_fast.cli.trace", "trace"),
    "capacity": ("apex_fast.cli.capacity", "capacity"),
    "profile": ("apex_fast.cli.profile", "profile"),
}
_REGISTERED: set[str] = set()


def register(only: str | None = None) -> None:
    """Register the command `only` when it names one, else every command (for `--help`)."""
    for name in [only] if only in COMMANDS else list(COMMANDS):
        if name in _REGISTERED:
            continue
        module, function = COMMANDS[name]
        app.command(name)(getattr(importlib.import_module(module), function))
        _REGISTERED.add(name)


_NARGS = ("--request-percentiles", "--token-percentiles")


def _expand_nargs(argv: list[str]) -> list[str]:
    """Accept the seed's `--request-percentiles 90 99` (argparse nargs='+') as well as Typer's
    repeated flags, by joining the values into one comma-separated argument."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in _NARGS:
            vals = []
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                vals.append(argv[i])
                i += 1
            out += [a, ",".join(vals)]
            continue
        out.append(a)
        i += 1
    return out


def _is_usage_error(e: BaseException) -> bool:
    """Click's exceptions (Typer >= 0.2x vendors Click; older Typer uses the click package)."""
    if not hasattr(e, "format_message"):
        return False
    if isinstance(e, typer.TyperException if hasattr(typer, "TyperException") else ()):
        return True
    for name in ("typer._click.exceptions", "click.exceptions"):
        mod = sys.modules.get(name)
        if mod is not None and isinstance(e, mod.ClickException):
            return True
    return False


_INVALID = re.compile(r"Invalid value for '(--[\w-]+)'(?: / '--[\w-]+')*: (.*)", re.S)
# Typer's own checks, as Click words them (Typer < 0.29) and as Pydantic does (Typer >= 0.29)
_REWRITES = (
    (re.compile(r"(\S+) is not in the range x>=(\S+?)\.?$"), r"must be >= \2, got \1"),
    (re.compile(r"(\S+) is not in the range x<=(\S+?)\.?$"), r"must be <= \2, got \1"),
    (re.compile(r"(\S+) is not in the range (\S+)<=x<=(\S+?)\.?$"), r"must be in [\2, \3], got \1"),
    (re.compile(r"(.+) is not a valid int(?:eger| range)\.?$"), r"must be an integer, got \1"),
    (re.compile(r"(.+) is not a valid float(?: range)?\.?$"), r"must be a number, got \1"),
    (re.compile(r"Input should be greater than or equal to (\S+)$"), r"must be >= \1"),
    (re.compile(r"Input should be less than or equal to (\S+)$"), r"must be <= \1"),
    (re.compile(r"Input should be a valid integer.*$"), "must be an integer"),
    (re.compile(r"Input should be a valid number.*$"), "must be a number"),
    (re.compile(r"Value error, (.*)$"), r"\1"),
)


def usage_line(message: str) -> str:
    """A usage error of Click or Typer as one line naming the flag: `--num-nodes must be >= 1,
    got 0` (ranges), `--objective: 'speed' is not one of 'latency', ...` (choices)."""
    text = " ".join(message.split())
    m = _INVALID.fullmatch(text)
    if m is None:
        return text
    flag, why = m.group(1), m.group(2)
    for pattern, repl in _REWRITES:
        why = pattern.sub(repl, why)
    return f"{flag} {why}" if why.startswith("must be ") else f"{flag}: {why}"


def _os_error_line(e: OSError) -> str:
    """One line for a file the user named that cannot be read or written (name too long,
    permission denied, no space left, ...)."""
    name = f" {e.filename}" if e.filename is not None else ""
    if len(name) > 120:  # an over-long file name is the error; do not print all of it
        name = name[:60] + "..." + name[-40:]
    return f"cannot access{name}: {e.strerror or e}"


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _expand_nargs(list(sys.argv[1:] if argv is None else argv))
    if not args:
        args = ["--help"]  # no arguments at all: the help is the answer (exit 0)
    debug = "--debug" in args
    try:
        register(args[0] if not args[0].startswith("-") else None)
        check_interrupted()  # a Ctrl-C Python swallowed while the command's modules loaded
        rv = app(args=args, standalone_mode=False)
        if rv == 130:  # Typer turns Ctrl-C inside a command into this exit code
            raise KeyboardInterrupt
        check_interrupted()
    except ApexError as e:
        _say(f"error: {' '.join(str(e).split()) or 'invalid input'}")
        return 2
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        # Ctrl-C (Click turns it into Abort): not a success, nothing half-written
        _say("interrupted")
        return 130
    except MemoryError:
        _say(
            "error: out of memory: the input is too large for this machine "
            "(see docs/limits.md for the bounds the tool enforces)"
        )
        return 2
    except OSError as e:
        if debug:
            traceback.print_exc()
        _say(f"error: {_os_error_line(e)}")
        return 2
    except ValueError as e:
        if "null byte" not in str(e):
            return _internal(e, debug)
        # a path with a NUL byte (Typer >= 0.29 refuses it while parsing, older ones do not)
        _say("error: a file name on the command line contains a NUL byte")
        return 2
    except Exception as e:  # noqa: BLE001
        if _is_usage_error(e):
            # bad flag, bad value type, missing option: one line, exit 2 (no usage block)
            msg = usage_line(str(e.format_message()))
            _say(f"error: {msg or 'incomplete command; see --help'}")
            return 2
        return _internal(e, debug)
    return 0


def _internal(e: Exception, debug: bool) -> int:
    """A bug, not bad input: one line and exit code 1 (the traceback with --debug)."""
    if debug:
        traceback.print_exc()
    else:
        _say(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)")
    return 1

"""Process entry point (`apex.py`, the `apex-fast` script).

`models` and `gpus` without options other than `--json` are printed straight from
`apex_fast.listing`; every other command line goes to the full command-line interface
(`apex_fast.cli`), whose imports (Typer and its validation layer) cost more than these listings.
"""

from __future__ import annotations

import os
import signal
import sys

# One OpenBLAS thread, unless the user's environment says otherwise (read when NumPy loads, so
# set before any import of it). The cost tables' small matrix products wake NumPy's OpenBLAS
# threads, which then spin on the other core: the README's 2-GPU example took a median 1.50 s
# CPU / 1.39 s wall with them and 1.19 s / 1.19 s with one thread, same output (8 alternating
# runs, load 0.9, bench/README.md); the batching kernel lost up to a third of its core to them.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

_interrupted = False


def _on_sigint(signum: int, frame: object) -> None:
    """Ctrl-C: remembered, then raised. Python ignores an exception raised inside some
    import-machinery callbacks ("Exception ignored in ... _get_module_lock"), so a Ctrl-C that
    lands while modules load could otherwise be lost and the run finish as a success."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def check_interrupted() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C arrived, even one Python swallowed: called before
    a command runs and before a report is written."""
    if _interrupted:
        raise KeyboardInterrupt


def _listing(args: list[str]) -> str | None:
    """The text of a plain `models`/`gpus` [--json] command line, None for anything else."""
    if not args or len(args) > 2 or (len(args) == 2 and args[1] != "--json"):
        return None
    from apex_fast.listing import LISTINGS

    fn = LISTINGS.get(args[0])
    return None if fn is None else fn(json_out=len(args) == 2)


def exit_now(code: int) -> None:
    """End the process with `code` once the command is done, without tearing the interpreter
    down: the atexit handlers run (temporary folders, process pools, logging, Ray), stdout and
    stderr are flushed, then the process exits. Tearing down the ~900 modules a `plan` loads
    (Numba's and Polars' object graphs) takes 0.3-0.45 s CPU, a quarter of the README's 2-GPU
    example (bench/README.md), and does nothing a finished command needs: apex-fast closes every
    file it writes before returning. With another thread still running, or if stdout cannot be
    flushed (a closed pipe), this returns and the caller exits the usual way."""
    import atexit
    import threading

    if threading.active_count() > 1:
        return
    atexit._run_exitfuncs()  # registered handlers run once, as at a normal exit
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


def run() -> None:
    """The `apex-fast` script and `apex.py`: `main` on sys.argv, then exit with its code."""
    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C while the modules load
        sys.stderr.write("interrupted\n")
        code = 130
    exit_now(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        try:
            signal.signal(signal.SIGINT, _on_sigint)
        except ValueError:  # not the main thread: keep Python's handler
            pass
    args = list(sys.argv[1:] if argv is None else argv)
    text = _listing(args)
    if text is not None:
        sys.stdout.write(text + "\n")
        return 0
    from apex_fast.cli import main as cli_main

    return cli_main(args)

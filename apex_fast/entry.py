"""Process entry point (`apex.py`, the `apex-fast` script).

`models` and `gpus` without options other than `--json` are printed straight from
`apex_fast.listing`; every other command line goes to the full command-line interface
(`apex_fast.cli`), whose imports (Typer and its validation layer) cost more than these listings.
"""

from __future__ import annotations

import sys


def _listing(args: list[str]) -> str | None:
    """The text of a plain `models`/`gpus` [--json] command line, None for anything else."""
    if not args or len(args) > 2 or (len(args) == 2 and args[1] != "--json"):
        return None
    from apex_fast.listing import LISTINGS

    fn = LISTINGS.get(args[0])
    return None if fn is None else fn(json_out=len(args) == 2)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    text = _listing(args)
    if text is not None:
        sys.stdout.write(text + "\n")
        return 0
    from apex_fast.cli import main as cli_main

    return cli_main(args)

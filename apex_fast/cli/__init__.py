"""Command line: `python apex.py plan | capacity | trace | validate | profile | models | gpus`.

One module per command (plan.py, capacity.py, trace.py, validate.py, profile.py, listing.py);
options shared by several commands are declared once in options.py, the checks that run before
any work in checks.py, and root.py holds the Typer application and `main`, which turns every
failure into one line on stderr (exit code 2 for bad input). The CLI only parses, checks, calls
the domain modules and prints; it knows nothing of kernels, and no domain module imports Typer.
"""

from apex_fast.cli.checks import kernel_cache_present
from apex_fast.cli.root import _expand_nargs, app, main

__all__ = ["_expand_nargs", "app", "kernel_cache_present", "main"]

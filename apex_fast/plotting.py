"""matplotlib (the optional `plot` extra) for the figures the CLI writes: the check that it is
installed, the headless backend, and writing a figure with a one-line error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apex_fast.errors import ApexError


def check_plot_available(flag: str) -> None:
    """Fail (before a search that may take a while) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ApexError(
            f"{flag} needs matplotlib: pip install 'apex-fast[plot]' (or pip install matplotlib)"
        ) from None


def pyplot(flag: str) -> Any:
    """matplotlib.pyplot on the headless Agg backend (ApexError naming `flag` when missing)."""
    check_plot_available(flag)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, flag: str) -> None:
    """Write `fig` to `path` (120 dpi) and close it; an unwritable path is an ApexError."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, dpi=120)
    except OSError as err:
        raise ApexError(f"cannot write {flag} file {path}: {err.strerror}") from None
    finally:
        plt.close(fig)

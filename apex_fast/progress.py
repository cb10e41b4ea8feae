"""Progress bar for plan searches (Rich, on stderr).

Shown only for searches that last more than a moment (`DELAY_S`), never with `--quiet` or when
stderr is not a terminal. Rich is imported only once the bar is due, so short searches pay nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

DELAY_S = 0.5  # a search finishing sooner shows no bar


class SearchProgress:
    """Callable `(plans_done, plans_total, label)`, as `apex_fast.search.search` expects."""

    def __init__(
        self, stream: TextIO | None = None, delay_s: float = DELAY_S, force: bool = False
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.delay_s = delay_s
        self.force = force  # draw even if the stream is not a terminal (tests)
        self.t0 = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int, label: str) -> None:
        if self._bar is None:
            if done >= total or time.perf_counter() - self.t0 < self.delay_s:
                return
            self._start(total)
        self._bar.update(self._task, completed=done, total=total, plan=label)
        if done >= total:
            self.close()

    def _start(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(file=self.stream, force_terminal=self.force or None)
        self._bar = Progress(
            TextColumn("plans"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[plan]}"),
            console=console,
            transient=True,
        )
        self._task = self._bar.add_task("search", total=total, plan="")
        self._bar.start()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> SearchProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_for(
    quiet: bool, stream: TextIO | None = None
) -> Callable[[int, int, str], None] | None:
    """The progress callback for a search, or None when it must stay silent."""
    stream = stream if stream is not None else sys.stderr
    if quiet:
        return None
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return SearchProgress(stream) if tty else None

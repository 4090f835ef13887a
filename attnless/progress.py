"""Progress bars (rich) with ETA and live metrics; silent when disabled."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Bar:
    """One progress bar with a free-form status text (loss, lr, tokens/s, ...)."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, amount: float = 1, **fields: Any) -> None:
        if self._progress is not None:
            status = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
            if fields:
                self._progress.update(self._task, advance=amount, status=status)
            else:
                self._progress.update(self._task, advance=amount)

    def set_description(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.3f}"
    return str(value)


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, enabled: bool = True) -> Iterator[Bar]:
    """A rich progress bar with elapsed time, ETA and a status field; a no-op when disabled."""
    if not enabled:
        yield Bar(None, None)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, status="")
        yield Bar(progress, task)

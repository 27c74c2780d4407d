"""Progress bars (rich) for long work: encoding, fitting, retrieval."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second, named by the task's ``unit`` field (e.g. ``images/s``)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        if speed is None:
            return Text(f"- {unit}/s", style="progress.data.speed")
        return Text(f"{speed:,.1f} {unit}/s", style="progress.data.speed")


class ProgressReporter:
    """One live rich display for a whole run; tasks open bars on it with :meth:`bar`."""

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
            transient=False,
        )
        self._depth = 0

    @contextmanager
    def bar(self, description: str, total: int | None, unit: str = "it",
            completed: int = 0) -> Iterator[Bar]:
        """Show a bar for the duration of the block; call ``advance(n)`` on what it yields.
        ``completed``: items already done before the block (e.g. resumed from the cache), shown
        as done but not counted in the rate."""
        if self._depth == 0:
            self._progress.start()
        self._depth += 1
        task_id = self._progress.add_task(description, total=total, unit=unit,
                                          completed=completed)
        try:
            yield Bar(self._progress, task_id)
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._progress.stop()
                for tid in list(self._progress.task_ids):
                    self._progress.remove_task(tid)


class Bar:
    """Handle to one progress bar."""

    def __init__(self, progress: Progress, task_id: int) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, n: int = 1) -> None:
        """Mark ``n`` more items done."""
        self._progress.advance(self._task_id, n)

    @property
    def completed(self) -> float:
        """Items done so far."""
        return next(t.completed for t in self._progress.tasks if t.id == self._task_id)

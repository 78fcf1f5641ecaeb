"""The progress bar of the long commands (`simulate run`, `simulate calibrate`): on stderr,
with an ETA, and only once the work has taken a couple of seconds, so short runs and pipes
stay quiet."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class ProgressBar:
    """A progress bar with ETA on stderr, shown only once a run has taken a couple of seconds."""

    DELAY_S = 2.0

    def __init__(self, enabled: bool, label: str = "simulating"):
        self.enabled, self.started = enabled, time.monotonic()
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.label = label

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.started < self.DELAY_S:
                return
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(self.label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TimeRemainingColumn(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("run", total=total)
        assert self.task is not None  # added with the bar
        self.bar.update(self.task, completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()

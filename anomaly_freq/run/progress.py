"""A sweep's progress: points done / total with an ETA, as a live bar on a terminal and as one
line per finished point elsewhere (logs, CI), where a live bar would show only its last state."""

from __future__ import annotations

import datetime
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TimeElapsedColumn


class SweepProgress:
    def __init__(self, console: Console, total: int, done_before: int) -> None:
        self.console = console
        self.total, self.done = total, done_before
        self.executed = 0  # points run by this sweep process, done or failed: the ETA's rate
        self.start = time.monotonic()
        self.bar = Progress("{task.description}", BarColumn(), "{task.completed}/{task.total} "
                            "points", TimeElapsedColumn(), "ETA {task.fields[eta]}",
                            console=console, disable=not console.is_terminal)
        self.task = self.bar.add_task("", total=total, completed=done_before, eta=self.eta())

    def __enter__(self) -> SweepProgress:
        self.bar.start()
        return self

    def __exit__(self, *_) -> None:
        self.bar.stop()

    def describe(self, text: str) -> None:
        self.bar.update(self.task, description=text)

    def advance(self, label: str, executed: bool = True) -> None:
        """One more point settled; ``executed`` when this process ran it (not skipped)."""
        self.done += 1
        self.executed += executed
        eta = self.eta()
        self.bar.update(self.task, completed=self.done, eta=eta)
        if not self.console.is_terminal:
            self.console.print(f"{self.done}/{self.total} points, ETA {eta}: {label}",
                               highlight=False, markup=False, soft_wrap=True)

    def eta(self) -> str:
        remaining = self.total - self.done
        if not remaining:
            return "0:00:00"
        if not self.executed:
            return "?"
        seconds = (time.monotonic() - self.start) / self.executed * remaining
        return str(datetime.timedelta(seconds=round(seconds)))

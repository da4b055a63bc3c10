"""Progress bars for long data work, drawn on a terminal only (logs and pipes stay clean)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from rich import get_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

T = TypeVar("T")


def bar(*columns: Any, show: bool = True, transient: bool = False) -> Progress:
    """A rich progress display, disabled unless ``show`` and standard output is a terminal."""
    console = get_console()
    return Progress(*columns, console=console, transient=transient,
                    disable=not (show and console.is_terminal))


def track(items: Sequence[T], description: str, show: bool = True) -> Iterator[T]:
    """``items``, with a bar (done / total, time left) that disappears when the loop ends."""
    with bar("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
             show=show, transient=True) as progress:
        yield from progress.track(items, description=description)

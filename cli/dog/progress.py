"""A progress bar for dog's long commands, from click.progressbar.

It goes to stderr, and only while stderr is a terminal: stdout carries a
command's data (`vdi read`, `vdi backup`) or dog's own text, which scripts
parse, and a pipe or a file gets nothing from here. Where a command knows
only as it goes how much there is (a recovery whose object list grows), the
total may change between updates.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

import click


def on_terminal() -> bool:
    """Whether a bar would be shown (stderr is a terminal)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


class Progress:
    """`done` of `total` units, shown as click's bar. Call it with
    (done, total), or `advance(n)`; `close` (or leaving the with block)
    ends the line. A no-op when stderr is not a terminal."""

    def __init__(self, label: str, total: int = 0, *, bytes_: bool = False) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.bytes = bytes_
        self._bar: Any = None
        self.on = on_terminal()

    def _open(self) -> None:
        # Positions as counts of objects; byte counts would be unreadable,
        # so a byte bar shows its percentage and the time left only.
        self._bar = click.progressbar(length=max(self.total, 1), label=self.label,
                                      file=sys.stderr, show_pos=not self.bytes,
                                      show_percent=True, show_eta=True, width=30)
        self._bar.__enter__()

    def __call__(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.done = done
        if not self.on:
            return
        if self._bar is None:
            self._open()
        bar = self._bar
        length = max(self.total, 1)
        resized, bar.length = bar.length != length, length
        step = min(done, length) - bar.pos
        if step > 0:
            bar.update(step)
        elif step < 0 or resized:  # another total, or a count that restarted
            bar.pos = min(done, length)
            bar.finished = bar.pos >= length
            bar.render_progress()

    def advance(self, n: int) -> None:
        self(self.done + n)

    def finish(self, total: int | None = None) -> None:
        """Show the bar full (the work is all done, `total` units of it
        when that turned out other than expected: input that ended early)
        and end its line."""
        end = max(self.total, self.done) if total is None else total
        self(end, end)
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            bar, self._bar = self._bar, None
            bar.__exit__(None, None, None)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

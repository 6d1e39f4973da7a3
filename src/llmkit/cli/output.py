"""The one place the CLI prints from: consoles, JSON, exact text, tables, sizes, progress bars.

Two rules hold for everything printed here:

- User text (model names, paths, messages, error text) is never read as rich markup or emoji
  codes: `escape()` (or `say()`, which applies it to its arguments) makes `[red]x[/red]` and
  `a:b:c` print as typed. The consoles also have emoji codes switched off.
- Piped output is exact: when stdout is not a terminal nothing is wrapped or coloured, and
  tables are printed at their natural width.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape as _escape_markup
from rich.table import Table


def _make_console(*, stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Rich wraps at 80 columns when it cannot ask a terminal; piped text must come out as it is.
    # (Colour is already off when the stream is not a terminal.)
    return Console(stderr=stderr, highlight=False, emoji=False, soft_wrap=not _isatty(stream))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


console = _make_console(stderr=False)
error_console = _make_console(stderr=True)


def escape(value: object) -> str:
    """A user string made safe to put inside rich markup: it prints exactly as given."""
    return _escape_markup(str(value))


def say(message: str, *values: object, err: bool = False, end: str = "\n") -> None:
    """Print markup `message` with each `{}` replaced by a value, escaped.

    say("Removed [bold]{}[/].", name) styles the sentence but prints the name as typed.
    """
    text = message.format(*(escape(value) for value in values))
    (error_console if err else console).print(text, end=end)


def print_error(error: object) -> None:
    """One line on stderr: 'Error: ' and the message as written (no markup, no emoji)."""
    error_console.print(f"[bold red]Error:[/] {escape(error)}")


def print_usage_error(message: str, command: str | None) -> None:
    """A mistyped command line: the error as one line, then where to read the options."""
    print_error(message)
    if command:
        error_console.print(f"Try '{command} --help'.", markup=False, highlight=False)


def print_json(data: Any) -> None:
    """JSON for scripts on stdout, exactly (indented, UTF-8 kept as text)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_text(text: str, *, final_newline: bool = True) -> None:
    """Text on stdout as it is: no markup, no wrapping (a newline is added when it lacks one,
    unless final_newline is False)."""
    sys.stdout.write(text + "\n" if final_newline and not text.endswith("\n") else text)
    sys.stdout.flush()


def print_table(table: Table, *, target: Console | None = None) -> None:
    """Print a table whose first column (the name a user types next) is never cut or wrapped.

    Piped, the table keeps its natural width. In a terminal narrower than the names, the other
    columns shrink, and past that the line is let run wider than the terminal.
    """
    target = target or console
    if not table.columns:
        target.print(table)
        return
    first = table.columns[0]
    first.no_wrap = True
    widths = [target.measure(cell).maximum for cell in first.cells]
    widths.append(target.measure(first.header).maximum)
    longest = max(widths)
    first.min_width = longest
    unbounded = target.options.update(width=1_000_000, max_width=1_000_000)
    natural = target.measure(table, options=unbounded).maximum
    if not target.is_terminal:
        width = natural
    else:
        # Room for the names in full, and a few cells of every other column beside them.
        others = len(table.columns) - 1
        padding = 2 * len(table.columns) + (0 if table.box is None else len(table.columns) + 1)
        width = max(min(target.width, natural), min(natural, longest + 4 * others + padding))
    # Console.print caps `width` at the console's own, so widen the console for this one table.
    saved = target.width
    target.width = width
    try:
        target.print(table, crop=False)
    finally:
        target.width = saved


def human_size(size: float | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def human_count(count: float | None) -> str:
    if not count:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f}{unit}".replace(".00", "")
    return str(int(count))


@contextmanager
def byte_progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar over bytes, shown on stderr; yields the callback the library calls."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=error_console,
        transient=True,
    ) as progress:
        task = progress.add_task(escape(description), total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update

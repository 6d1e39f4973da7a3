"""The terminal side of `llmkit chat`: reading a message (one line, or several between \"\"\"),
keeping the keyboard quiet while the model answers, and the progress of reading a long prompt."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from llmkit.cli.output import error_console

FENCE = '"""'
CONTINUATION_PROMPT = "... "


def read_message(first_line: str, read_line: Callable[[str], str]) -> str:
    """The message that starts with `first_line`: the line itself, or, when it starts with \"\"\",
    every line up to one that ends with \"\"\" (as in Ollama). The fences are not part of it.

    `read_line(prompt)` reads the next line (input); its EOFError and KeyboardInterrupt pass on,
    so the caller can drop the unfinished message.
    """
    if not first_line.startswith(FENCE):
        return first_line
    lines = [first_line[len(FENCE) :]]
    while not lines[-1].endswith(FENCE):
        lines.append(read_line(CONTINUATION_PROMPT))
    return "\n".join(lines)[: -len(FENCE)]


@contextlib.contextmanager
def quiet_keyboard() -> Iterator[None]:
    """While the model answers, keys typed are neither shown (they would land inside the answer)
    nor kept for the next message; Ctrl-C still interrupts. No-op when stdin is not a terminal."""
    try:
        import termios
    except ImportError:  # not a POSIX terminal
        yield
        return
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        yield
        return
    descriptor = stdin.fileno()
    saved = termios.tcgetattr(descriptor)
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ICANON)  # lflags: no echo, no line editing
    termios.tcsetattr(descriptor, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcflush(descriptor, termios.TCIFLUSH)  # drop what was typed meanwhile
        termios.tcsetattr(descriptor, termios.TCSANOW, saved)


@contextlib.contextmanager
def prompt_progress() -> Iterator[Callable[[int, int], None]]:
    """A transient bar on stderr for reading a long prompt; yields the (done, total) callback.
    It appears only when called, so short messages show nothing."""
    from rich.progress import BarColumn, Progress, TextColumn

    progress = Progress(
        TextColumn("[dim]reading the prompt"),
        BarColumn(),
        TextColumn("[dim]{task.completed:,}/{task.total:,} tokens"),
        console=error_console,
        transient=True,
    )
    task = progress.add_task("prompt", total=None)
    started = False

    def update(done: int, total: int) -> None:
        nonlocal started
        progress.update(task, completed=done, total=total)
        if not started:
            progress.start()
            started = True

    try:
        yield update
    finally:
        if started:
            progress.stop()

"""Model and template text as the CLI prints it: exact when piped, readable in a terminal.

Piped (the stream is not a terminal), text is written as it is: no wrapping, no colour, no tab
expansion, and marked parts (special tokens, trained tokens, would-be stops) carry plain-text
marks instead of styles, so the marking survives `> file`. In a terminal, marked parts are styled,
and streamed answers wrap between words instead of inside them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from llmkit.cli.output import console

if TYPE_CHECKING:
    from llmkit.generation.loop import GenerationResult, GenerationStream


@dataclass(frozen=True)
class Mark:
    """How a marked part of the text looks: a style in a terminal, plain marks in a pipe."""

    style: str
    opening: str = ""
    closing: str = ""

    def plain(self, text: str) -> str:
        return f"{self.opening}{text}{self.closing}"


WOULD_STOP = Mark("reverse yellow")


def would_stop_text(token: str) -> str:
    """The marker shown where the model produced a stop token under --ignore-eos."""
    return f"⟨would stop: {token}⟩"


def print_marked(
    segments: Iterable[tuple[str, Mark | None]], *, target: Console | None = None, end: str = "\n"
) -> None:
    """Print text made of (piece, mark) runs; lines are never wrapped by llmkit."""
    target = target or console
    if target.is_terminal:
        text = Text()
        for piece, mark in segments:
            text.append(piece, style=mark.style if mark else "")
        target.print(text, end=end, soft_wrap=True, highlight=False)
        return
    plain = "".join(mark.plain(p) if mark else p for p, mark in segments)
    if target.record:  # a console capturing for export (tests, `/show` in a notebook)
        target.print(Text(plain), end=end, soft_wrap=True, highlight=False)
        return
    target.file.write(plain + end)  # written past rich, which would expand tabs
    target.file.flush()


class AnswerWriter:
    """Writes a streamed answer: in a terminal, a word that would cross the right edge starts the
    next line (the terminal itself would cut it in two); piped, every character as it comes."""

    def __init__(self, target: Console | None = None) -> None:
        self.target = target or console
        self.out = self.target.file
        self.width = self.target.width if self.target.is_terminal else None
        self.column = 0
        self.word = ""

    def write(self, text: str) -> None:
        if self.width is None:
            self.out.write(text)
        else:
            for char in text:
                if char == "\n":
                    self._end_word()
                    self.out.write("\n")
                    self.column = 0
                elif char.isspace():
                    self._end_word()
                    if self.column + 1 > self.width:
                        self.out.write("\n")  # the space falls at the edge: break the line there
                        self.column = 0
                    else:
                        self.out.write(char)
                        self.column += 1
                else:
                    self.word += char
        self.out.flush()

    def mark(self, text: str, mark: Mark) -> None:
        """A marked run (e.g. a would-be stop), placed like a word."""
        if self.width is None:
            self.out.write(mark.plain(text))
            self.out.flush()
            return
        self._end_word()
        self._make_room(cell_len(text))
        self.out.flush()
        self.target.print(Text(text, style=mark.style), end="", soft_wrap=True, highlight=False)
        self.column += cell_len(text)

    def finish(self) -> None:
        """Write what is held back (the last word)."""
        self._end_word()
        self.out.flush()

    @property
    def at_line_start(self) -> bool:
        return self.column == 0 and not self.word

    def _end_word(self) -> None:
        if not self.word:
            return
        width = cell_len(self.word)
        self._make_room(width)
        self.out.write(self.word)
        self.word = ""
        assert self.width is not None
        self.column += width
        if self.column > self.width:  # a word longer than a line: the terminal cut it
            self.column %= self.width

    def _make_room(self, width: int) -> None:
        assert self.width is not None
        if self.column > 0 and self.column + width > self.width:
            self.out.write("\n")
            self.column = 0


def write_answer(
    stream: GenerationStream, writer: AnswerWriter | None = None
) -> GenerationResult | None:
    """Print a stream's chunks as they come, marking where the model would have stopped
    (--ignore-eos); returns the stream's result."""
    writer = writer or AnswerWriter()
    try:
        for chunk in stream:
            if chunk.text:
                writer.write(chunk.text)
            if chunk.would_stop_at:
                writer.mark(would_stop_text(chunk.would_stop_at), WOULD_STOP)
    finally:
        writer.finish()
    return stream.result

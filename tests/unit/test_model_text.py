"""Model text on the terminal (wrapped between words, styled marks) and in a pipe (exact, plain marks)."""

from __future__ import annotations

import io

from rich.console import Console

from llmkit.cli.model_text import WOULD_STOP, AnswerWriter, Mark, print_marked

ANSWER = "The quick brown fox jumps over the lazy dog, and then\nit\tsleeps under a tree."


def _console(terminal: bool, width: int = 20) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=width, color_system=None)
    return console, out


def _stream(writer: AnswerWriter, text: str, size: int = 3) -> None:
    for start in range(0, len(text), size):  # chunks that cut words, as tokens do
        writer.write(text[start : start + size])
    writer.finish()


def test_a_terminal_answer_breaks_lines_between_words() -> None:
    console, out = _console(terminal=True)
    _stream(AnswerWriter(console), ANSWER)
    lines = out.getvalue().split("\n")
    assert all(len(line) <= 20 for line in lines)
    assert out.getvalue().split() == ANSWER.split()  # no word was cut in two
    assert lines[0] == "The quick brown fox " and lines[1].startswith("jumps")


def test_a_piped_answer_is_exact() -> None:
    console, out = _console(terminal=False)
    writer = AnswerWriter(console)
    _stream(writer, ANSWER)
    writer.mark("⟨would stop: <|im_end|>⟩", WOULD_STOP)
    assert out.getvalue() == ANSWER + "⟨would stop: <|im_end|>⟩"


def test_a_word_longer_than_the_line_is_written_whole() -> None:
    console, out = _console(terminal=True, width=8)
    _stream(AnswerWriter(console), "a supercalifragilistic word")
    assert "supercalifragilistic" in out.getvalue()


def test_marks_are_plain_text_in_a_pipe() -> None:
    console, out = _console(terminal=False)
    trained = Mark("reverse green", "⟦", "⟧")
    print_marked([("context\t", None), ("trained", trained)], target=console)
    assert out.getvalue() == "context\t⟦trained⟧\n"
    console, out = _console(terminal=True, width=200)
    print_marked([("context ", None), ("trained", trained)], target=console)
    assert out.getvalue() == "context trained\n"  # styled (no colours here), not bracketed

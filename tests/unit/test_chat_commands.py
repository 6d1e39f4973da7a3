"""`llmkit chat` without a terminal: /set, /history, /show, multi-line messages, and reading a long
prompt step by step (tiny real model)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import llmkit
from llmkit.chat import session as session_module
from llmkit.chat.session import ChatSession
from llmkit.cli import chat_commands
from llmkit.cli.chat_terminal import read_message
from llmkit.cli.generate import _prompt_with_stdin
from llmkit.errors import InvalidParameterError


@pytest.fixture(scope="module")
def tiny(tiny_gguf: Path):
    with llmkit.load(str(tiny_gguf), context_length=128) as model:
        yield model


def answer(session: ChatSession, text: str, progress=None) -> str:
    stream = session.ask(text, progress=progress)
    list(stream)
    session.record(stream.result)
    assert stream.result is not None
    return stream.result.text


def test_set_changes_sampling_and_refuses_bad_values(tiny) -> None:
    session = ChatSession(tiny, params=tiny.params(temperature=0.7))
    assert session.set("temperature", "0.2") == "temperature = 0.2"
    assert session.set("top-p", "0.5") == "top_p = 0.5"
    assert session.set("max_tokens", "12") == "max_tokens = 12"
    assert session.set("seed", "7") == "seed = 7"
    assert (session.params.temperature, session.params.top_p) == (0.2, 0.5)
    assert session.set("seed", "off") == "seed off" and session.params.seed is None
    assert session.set("system", "Be brief.") == "system prompt set"
    assert session.settings()["system"] == "Be brief."
    for name, value, message in [
        ("top_p", "2", "top_p must be greater than 0"),
        ("top_k", "many", "top_k must be an integer"),
        ("temperature", "", "Give a value"),
        ("colour", "blue", "/set knows temperature"),
    ]:
        with pytest.raises(InvalidParameterError, match=message):
            session.set(name, value)
    assert session.params.top_p == 0.5  # a refused value changes nothing


def test_chat_commands_print_settings_history_and_the_next_prompt(tiny, capsys) -> None:
    session = ChatSession(tiny, params=tiny.params(temperature=0, max_tokens=3))
    chat_commands.handle(session, "/history")
    assert "no messages yet" in capsys.readouterr().out
    answer(session, "first question")
    chat_commands.handle(session, "/set temperature 0.4")
    chat_commands.handle(session, "/set")
    chat_commands.handle(session, "/history")
    chat_commands.handle(session, "/set top_p 9")
    captured = capsys.readouterr()
    assert "temperature = 0.4" in captured.out
    assert "max_tokens      3" in captured.out
    assert "1. user: first question" in captured.out and "2. assistant:" in captured.out
    assert "top_p must be greater than 0" in captured.err
    chat_commands.handle(session, "/show")
    shown = capsys.readouterr().out
    # The view is the prompt of the next message: its user turn, then the assistant header.
    assert "written here as ⟨your next message⟩" in shown
    assert shown.index("first question") < shown.rindex(chat_commands.NEXT_MESSAGE)
    assert shown.rindex("assistant") > shown.rindex(chat_commands.NEXT_MESSAGE)
    chat_commands.handle(session, "/show What next?")
    assert "What next?" in capsys.readouterr().out


def test_multi_line_messages_between_fences() -> None:
    lines = iter(["second line", 'third"""'])
    assert read_message('"""first', lambda prompt: next(lines)) == "first\nsecond line\nthird"
    assert read_message('"""one line"""', lambda prompt: "") == "one line"
    assert read_message("plain", lambda prompt: "") == "plain"

    def ended(prompt: str) -> str:
        raise EOFError

    with pytest.raises(EOFError):
        read_message('"""unfinished', ended)


def test_a_long_prompt_is_read_in_steps_with_the_same_answer(tiny, monkeypatch) -> None:
    text = "a long message " * 6
    params = tiny.params(temperature=0, max_tokens=6)
    plain = answer(ChatSession(tiny, params=params), text)
    monkeypatch.setattr(session_module, "PREFILL_CHUNK", 16)
    monkeypatch.setattr(session_module, "PROGRESS_THRESHOLD", 16)
    tiny.engine.context.keep_prefix(0, 0)  # nothing cached from the first answer
    steps: list[tuple[int, int]] = []
    session = ChatSession(tiny, params=params)
    total = len(tiny.prompt_ids(session.conversation(text)))
    assert answer(session, text, progress=lambda done, of: steps.append((done, of))) == plain
    assert steps[0] == (0, total) and len(steps) > 2
    assert [done for done, _ in steps] == sorted(done for done, _ in steps)
    assert all(of == total and done < total for done, of in steps)
    # A follow-up reads only what the cache lacks; under the threshold it shows nothing at all.
    steps.clear()
    answer(session, "ok", progress=lambda done, of: steps.append((done, of)))
    assert steps and steps[0][0] > 0
    monkeypatch.setattr(session_module, "PROGRESS_THRESHOLD", 100)
    steps.clear()
    answer(session, "ok", progress=lambda done, of: steps.append((done, of)))
    assert steps == []


@pytest.mark.parametrize(
    ("piped", "prompt", "expected"),
    [
        ("notes line\n", "Summarise", "notes line\n\nSummarise"),
        ("", "Summarise", "Summarise"),
        ("just stdin\n", None, "just stdin\n"),
        ("  \n", "  keep my spaces ", "  keep my spaces "),
    ],
)
def test_piped_text_comes_before_the_prompt(monkeypatch, piped, prompt, expected) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(piped))
    assert _prompt_with_stdin(prompt) == expected


def test_an_empty_prompt_is_refused(monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    with pytest.raises(InvalidParameterError, match="The prompt is empty"):
        _prompt_with_stdin(None)

import json
from pathlib import Path

import pytest

import llmkit
from llmkit.chat.session import ChatSession
from llmkit.errors import ContextOverflowError, LlmkitError


@pytest.fixture(scope="module")
def tiny(tiny_gguf: Path):
    with llmkit.load(str(tiny_gguf), context_length=128) as model:
        yield model


def answer(session: ChatSession, text: str) -> str:
    dropped = session.fit(text)
    stream = session.ask(text)
    list(stream)
    session.record(stream.result)
    return dropped


def test_history_is_kept_and_rendered_with_the_system_prompt(tiny) -> None:
    session = ChatSession(tiny, system="Be brief.", params=tiny.params(temperature=0, max_tokens=4))
    answer(session, "hi")
    answer(session, "more")
    roles = [m["role"] for m in session.conversation()]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert session.next_prompt().startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_oldest_turns_are_dropped_but_the_system_prompt_stays(tiny) -> None:
    session = ChatSession(tiny, system="S", params=tiny.params(temperature=0, max_tokens=8))
    dropped = [answer(session, f"question number {i} " * 3) for i in range(6)]
    assert sum(dropped) > 0
    assert session.conversation()[0] == {"role": "system", "content": "S"}
    assert session.messages[0]["role"] == "user"
    session.fit("next")
    room = tiny.context_length - session.reserved_tokens()
    assert len(tiny.prompt_ids(session.conversation("next"))) <= room


def test_a_single_message_too_long_is_a_clear_error(tiny) -> None:
    session = ChatSession(tiny, params=tiny.params(max_tokens=8))
    with pytest.raises(ContextOverflowError, match="too long"):
        session.fit("x " * 200)
    assert session.messages == []


def test_save_and_load_round_trip(tiny, tmp_path: Path) -> None:
    session = ChatSession(tiny, system="Sys", params=tiny.params(temperature=0, max_tokens=4))
    answer(session, "hi")
    path = session.save(tmp_path / "chat.json")
    other = ChatSession(tiny)
    assert other.load(path) == 2
    assert other.conversation() == session.conversation()
    assert json.loads(path.read_text())["model"] == tiny.name


@pytest.mark.parametrize(
    "content", ["{broken", json.dumps({"messages": [{"role": "wizard", "content": "x"}]}), "[1, 2]"]
)
def test_loading_a_bad_file_is_refused_and_keeps_the_conversation(
    tiny, tmp_path: Path, content: str
) -> None:
    session = ChatSession(tiny)
    session.messages = [{"role": "user", "content": "keep me"}]
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(LlmkitError):
        session.load(path)
    assert session.messages == [{"role": "user", "content": "keep me"}]

"""The exchanges log: written, listed, searched, shown, deleted, and migrated forward."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from llmkit.errors import InvalidParameterError, LlmkitError
from llmkit.store.history import (
    MIGRATIONS,
    Exchange,
    History,
    logging_enabled,
    new_conversation,
    set_logging,
)


def exchange(prompt: str, answer: str, conversation: str = "c1", kind: str = "chat") -> Exchange:
    return Exchange(
        conversation=conversation, kind=kind, model="smollm2", prompt=prompt, answer=answer,
        system="Be brief.", parameters={"temperature": 0.0}, prompt_tokens=12,
        completion_tokens=5, seconds=0.4, finish_reason="stop",
    )  # fmt: skip


def test_exchanges_are_listed_newest_first_and_shown_in_full(tmp_path: Path) -> None:
    history = History(tmp_path)
    first = history.add(exchange("How far is Betelgeuse?", "About 550 light-years."))
    second = history.add(exchange("And Rigel?", "About 860 light-years."))
    assert [e.id for e in history.recent()] == [second, first]
    shown = history.get(first)
    assert shown.answer == "About 550 light-years." and shown.parameters == {"temperature": 0.0}
    assert shown.system == "Be brief." and shown.completion_tokens == 5
    with pytest.raises(LlmkitError, match="no logged exchange 99"):
        history.get(99)


def test_full_text_search_finds_words_in_prompts_and_answers(tmp_path: Path) -> None:
    history = History(tmp_path)
    history.add(exchange("How far is Betelgeuse?", "About 550 light-years."))
    history.add(exchange("Bake bread?", "Flour, water, yeast."))
    assert [e.prompt for e in history.recent(query="yeast")] == ["Bake bread?"]
    assert [e.prompt for e in history.recent(query="betelgeuse")] == ["How far is Betelgeuse?"]
    # Punctuation and FTS operators in a query are words, not syntax.
    assert history.recent(query='light-years" OR *') == []
    assert len(history.recent(query="light-years")) == 1
    with pytest.raises(InvalidParameterError):
        history.recent(query="   ")


def test_a_conversation_comes_back_in_order_and_the_latest_chat_is_found(tmp_path: Path) -> None:
    history = History(tmp_path)
    history.add(exchange("one", "1", conversation="a"))
    history.add(exchange("two", "2", conversation="a"))
    history.add(exchange("solo", "x", conversation="b", kind="run"))  # not a chat
    assert [e.prompt for e in history.conversation()] == ["one", "two"]
    assert [e.prompt for e in history.conversation("b")] == ["solo"]
    with pytest.raises(LlmkitError, match="no logged conversation"):
        history.conversation("zzz")
    assert len(new_conversation()) == 12


def test_deleting_removes_rows_and_their_search_entries(tmp_path: Path) -> None:
    history = History(tmp_path)
    kept = history.add(exchange("keep me", "ok"))
    gone = history.add(exchange("forget me", "ok"))
    assert history.remove([gone]) == 1
    assert [e.id for e in history.recent()] == [kept]
    assert history.recent(query="forget") == []
    assert history.remove(everything=True) == 1 and history.recent() == []


def test_an_older_database_is_migrated_forward_with_its_rows(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "logs.db")
    old.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    old.execute(
        "INSERT INTO exchanges (conversation, created, kind, model, prompt, answer) "
        "VALUES ('c', 1.0, 'run', 'smollm2', 'old prompt about comets', 'old answer')"
    )
    old.commit()
    old.close()
    history = History(tmp_path)
    assert [e.prompt for e in history.recent(query="comets")] == ["old prompt about comets"]
    version = sqlite3.connect(tmp_path / "logs.db").execute("PRAGMA user_version").fetchone()[0]
    assert version == len(MIGRATIONS)


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    newer = sqlite3.connect(tmp_path / "logs.db")
    newer.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    newer.close()
    with pytest.raises(LlmkitError, match="newer llmkit"):
        History(tmp_path).recent()


def test_a_corrupt_database_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "logs.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LlmkitError, match="unreadable"):
        History(tmp_path).recent()


def test_logging_can_be_turned_off_by_setting_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMKIT_LOG", raising=False)
    assert logging_enabled(tmp_path)
    set_logging(False, tmp_path)
    assert not logging_enabled(tmp_path)
    set_logging(True, tmp_path)
    monkeypatch.setenv("LLMKIT_LOG", "0")
    assert not logging_enabled(tmp_path)


def test_list_bounds_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="between 1 and"):
        History(tmp_path).recent(limit=0)

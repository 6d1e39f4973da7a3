"""Every exchange with a model, kept in a local SQLite database (`LLMKIT_HOME/logs.db`).

`run`, `chat` and `agent` append one row per answer: model, system prompt, prompt, answer,
parameters, token counts, timing and the conversation it belongs to, so that `llmkit logs` can list,
search (SQLite's FTS5 full-text index) and show them, and `chat --continue` can resume one. Nothing
leaves the machine. The schema carries its version (`PRAGMA user_version`) and is migrated forward
in order when a newer llmkit opens an older database.

Logging is on unless `LLMKIT_LOG=0`, `--no-log`, or `llmkit logs off` (kept in `logs.json`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmkit.errors import InvalidParameterError, LlmkitError
from llmkit.store.paths import llmkit_home

DATABASE = "logs.db"
SETTINGS = "logs.json"
MAX_LIST = 10_000

# Each entry moves a database from the version before it to its own number; never edit one that
# has shipped, add the next. Version 1 was the first schema; 2 added full-text search.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE exchanges (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation TEXT NOT NULL,
        created REAL NOT NULL,
        kind TEXT NOT NULL,
        model TEXT NOT NULL,
        system TEXT,
        prompt TEXT NOT NULL,
        answer TEXT NOT NULL,
        parameters TEXT NOT NULL DEFAULT '{}',
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        seconds REAL,
        finish_reason TEXT
    );
    CREATE INDEX exchanges_conversation ON exchanges (conversation, id);
    """,
    """
    CREATE VIRTUAL TABLE exchanges_text USING fts5(
        prompt, answer, system, content='exchanges', content_rowid='id'
    );
    INSERT INTO exchanges_text (rowid, prompt, answer, system)
        SELECT id, prompt, answer, coalesce(system, '') FROM exchanges;
    CREATE TRIGGER exchanges_added AFTER INSERT ON exchanges BEGIN
        INSERT INTO exchanges_text (rowid, prompt, answer, system)
            VALUES (new.id, new.prompt, new.answer, coalesce(new.system, ''));
    END;
    CREATE TRIGGER exchanges_removed AFTER DELETE ON exchanges BEGIN
        INSERT INTO exchanges_text (exchanges_text, rowid, prompt, answer, system)
            VALUES ('delete', old.id, old.prompt, old.answer, coalesce(old.system, ''));
    END;
    """,
)
COLUMNS = (
    "id, conversation, created, kind, model, system, prompt, answer, parameters, "
    "prompt_tokens, completion_tokens, seconds, finish_reason"
)


@dataclass
class Exchange:
    """One prompt and its answer."""

    conversation: str
    kind: str  # "run", "chat" or "agent"
    model: str
    prompt: str
    answer: str
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float | None = None
    finish_reason: str | None = None
    created: float = field(default_factory=time.time)
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def new_conversation() -> str:
    return uuid.uuid4().hex[:12]


def logging_enabled(home: Path | None = None) -> bool:
    """LLMKIT_LOG=0 wins; otherwise what `llmkit logs on/off` last set (on by default)."""
    if os.environ.get("LLMKIT_LOG", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    path = (home or llmkit_home()) / SETTINGS
    try:
        return bool(json.loads(path.read_text()).get("enabled", True))
    except (OSError, ValueError, AttributeError):
        return True


def set_logging(enabled: bool, home: Path | None = None) -> None:
    root = home or llmkit_home()
    root.mkdir(parents=True, exist_ok=True)
    (root / SETTINGS).write_text(json.dumps({"enabled": enabled}) + "\n")


class History:
    """The exchanges database; opening it creates or migrates it."""

    def __init__(self, home: Path | None = None) -> None:
        self.path = (home or llmkit_home()) / DATABASE

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(self.path, timeout=10)
        except sqlite3.Error as error:
            raise LlmkitError(f"The log database {self.path} cannot be opened: {error}") from error
        try:
            migrate(connection)
            with connection:  # one transaction: committed, or rolled back on an error
                yield connection
        except sqlite3.DatabaseError as error:
            raise LlmkitError(
                f"The log database {self.path} is unreadable ({error}); move it away to start "
                "a new one."
            ) from error
        finally:
            connection.close()

    def add(self, exchange: Exchange) -> int:
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO exchanges (conversation, created, kind, model, system, prompt, "
                "answer, parameters, prompt_tokens, completion_tokens, seconds, finish_reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    exchange.conversation, exchange.created, exchange.kind, exchange.model,
                    exchange.system, exchange.prompt, exchange.answer,
                    json.dumps(exchange.parameters), exchange.prompt_tokens,
                    exchange.completion_tokens, exchange.seconds, exchange.finish_reason,
                ),
            )  # fmt: skip
            exchange.id = int(cursor.lastrowid or 0)
        return exchange.id

    def recent(
        self, *, limit: int = 20, query: str | None = None, model: str | None = None
    ) -> list[Exchange]:
        """The newest exchanges first; `query` is full-text search over prompts and answers."""
        if not 1 <= limit <= MAX_LIST:
            raise InvalidParameterError(f"--count must be between 1 and {MAX_LIST}.")
        where, values = [], []
        if query:
            where.append("id IN (SELECT rowid FROM exchanges_text WHERE exchanges_text MATCH ?)")
            values.append(_fts_query(query))
        if model:
            where.append("model = ?")
            values.append(model)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM exchanges {clause} ORDER BY id DESC LIMIT ?",
                (*values, limit),
            ).fetchall()
        return [_exchange(row) for row in rows]

    def get(self, exchange_id: int) -> Exchange:
        with self._connect() as db:
            row = db.execute(
                f"SELECT {COLUMNS} FROM exchanges WHERE id = ?", (exchange_id,)
            ).fetchone()
        if row is None:
            raise LlmkitError(f"There is no logged exchange {exchange_id}; see `llmkit logs`.")
        return _exchange(row)

    def conversation(self, conversation: str | None = None) -> list[Exchange]:
        """Every exchange of a conversation, oldest first; None: the latest conversation."""
        with self._connect() as db:
            if conversation is None:
                latest = db.execute(
                    "SELECT conversation FROM exchanges WHERE kind = 'chat' ORDER BY id DESC LIMIT 1"
                ).fetchone()
                if latest is None:
                    raise LlmkitError("There is no logged chat to continue yet.")
                conversation = str(latest[0])
            rows = db.execute(
                f"SELECT {COLUMNS} FROM exchanges WHERE conversation = ? ORDER BY id",
                (conversation,),
            ).fetchall()
        if not rows:
            raise LlmkitError(f"There is no logged conversation '{conversation}'.")
        return [_exchange(row) for row in rows]

    def remove(self, ids: Sequence[int] = (), *, everything: bool = False) -> int:
        """Delete the given exchanges (or all of them); returns how many went."""
        with self._connect() as db:
            if everything:
                cursor = db.execute("DELETE FROM exchanges")
            else:
                marks = ",".join("?" for _ in ids)
                cursor = db.execute(f"DELETE FROM exchanges WHERE id IN ({marks})", tuple(ids))
            return cursor.rowcount


def record(exchange: Exchange, *, home: Path | None = None) -> str | None:
    """Log an exchange unless logging is off. Returns a one-line warning when it could not be
    logged: the answer was already given, so a full disk must not turn it into a failure."""
    if not logging_enabled(home):
        return None
    try:
        History(home).add(exchange)
    except LlmkitError as error:
        return f"The exchange was not logged: {error}"
    return None


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the database to the newest schema, one version at a time; returns the version."""
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise LlmkitError(
            f"The log database was written by a newer llmkit (schema {version}); upgrade llmkit."
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript commits first; the version is set in the same script, so a crash
        # leaves the database at a version whose whole script ran.
        connection.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")
    return len(MIGRATIONS)


def _fts_query(text: str) -> str:
    """The user's words as FTS5 terms, each quoted, so punctuation cannot break the query."""
    words = [word.replace('"', '""') for word in text.split()]
    if not words:
        raise InvalidParameterError("Give some words to search for.")
    return " ".join(f'"{word}"' for word in words)


def _exchange(row: tuple[Any, ...]) -> Exchange:
    (
        id_, conversation, created, kind, model, system, prompt, answer, parameters,
        prompt_tokens, completion_tokens, seconds, finish_reason,
    ) = row  # fmt: skip
    return Exchange(
        conversation=conversation, kind=kind, model=model, prompt=prompt, answer=answer,
        system=system, parameters=json.loads(parameters or "{}"), prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens, seconds=seconds, finish_reason=finish_reason,
        created=created, id=id_,
    )  # fmt: skip

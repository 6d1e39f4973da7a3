"""`serve --log`: each finished generation kept in the local history (`llmkit logs`), kind "serve".

Rows are written by one background thread, so a slow disk never holds up the event loop, and a
failure to write is a warning in the server log: the answer was already sent.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any

from llmkit.store.history import Exchange, new_conversation, record

log = logging.getLogger("llmkit.server")
PENDING_LIMIT = 1000  # rows waiting to be written; past it, exchanges go unlogged (with a warning)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI's content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def exchange_of(model: str, ask: Any, result: Any) -> Exchange:
    """The history row of a request (a GenerationRequest) and its GenerationResult."""
    system = None
    prompt = ask.prompt or ""
    if ask.messages is not None:
        systems = [_text(m.get("content")) for m in ask.messages if m.get("role") == "system"]
        users = [_text(m.get("content")) for m in ask.messages if m.get("role") == "user"]
        system = systems[0] if systems else None
        prompt = users[-1] if users else ""
    timing = result.timing
    return Exchange(
        conversation=new_conversation(),
        kind="serve",
        model=model,
        prompt=prompt,
        answer=result.text,
        system=system,
        parameters=dict(ask.params),
        prompt_tokens=result.usage.prompt_tokens,
        completion_tokens=result.usage.completion_tokens,
        seconds=round(timing.first_token_seconds + timing.generation_seconds, 4),
        finish_reason=result.finish_reason,
    )


class ExchangeLog:
    def __init__(self, home: Path | None = None) -> None:
        self.home = home
        self._pending: queue.Queue[Exchange | None] = queue.Queue(PENDING_LIMIT)
        self._thread = threading.Thread(target=self._write, name="llmkit-exchange-log", daemon=True)
        self._thread.start()

    def record(self, model: str, ask: Any, result: Any) -> None:
        try:
            self._pending.put_nowait(exchange_of(model, ask, result))
        except queue.Full:
            log.warning("an exchange with %s was not logged: too many are waiting", model)
        except Exception:  # logging must never fail the request it follows
            log.exception("an exchange with %s could not be logged", model)

    def _write(self) -> None:
        while (exchange := self._pending.get()) is not None:
            warning = record(exchange, home=self.home)
            if warning:
                log.warning("%s", warning)

    def close(self) -> None:
        """Write what is waiting, then stop."""
        self._pending.put(None)
        self._thread.join(timeout=10)

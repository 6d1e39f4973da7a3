"""The models a server holds: loaded on demand, kept for `keep_alive`, evicted under a memory budget.

A request names a model; `acquire` returns it loaded, loading it first if needed (concurrent
requests for the same model wait for one load). A model stays loaded for its keep_alive after its
last request ends (Ollama's rule: each request may set it; 0 unloads once the request is done,
a negative one keeps it for good). Before a load, the least recently used idle models are unloaded
until the new model's planner estimate fits the budget; a model with requests in flight is never
unloaded. Pinned models (the ones `llmkit serve MODEL...` was started with) stay loaded for the server's
life: they never expire, are never evicted, and refuse to be unloaded.

Which models a request holds is kept per HTTP request in a context variable (`RequestScope`), set
by the server's middleware around the whole response, streamed ones included: the model is in
flight until the last byte is sent, however the request ends.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmkit.errors import InvalidParameterError, LlmkitError, ModelNotFoundError

if TYPE_CHECKING:
    from llmkit.server.state import ServedModel

log = logging.getLogger("llmkit.server")
FOREVER = math.inf
DEFAULT_KEEP_ALIVE = 300.0  # seconds, as Ollama's default of 5 minutes


class ModelBusyError(LlmkitError):
    """The model does not fit until models now answering requests are done (503, retry)."""


class ModelTooLargeError(LlmkitError):
    """The model does not fit the memory budget even with every unpinned model unloaded."""


# ---- keep_alive and sizes, as Ollama and people write them -----------------------------------
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_GO_UNITS["h"] = 3600.0
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
KEEP_ALIVE_HELP = (
    "keep_alive must be a duration such as '5m', '30s' or '1h30m', a number of seconds, "
    "0 to unload after the request, or negative to keep the model loaded"
)


def parse_keep_alive(value: Any) -> float:
    """Seconds to keep a model loaded after a request; FOREVER for a negative value."""
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration(value.strip())
    if seconds is None or math.isnan(seconds):
        raise InvalidParameterError(f"{KEEP_ALIVE_HELP}, not {value!r}.")
    return FOREVER if seconds < 0 else seconds


def _parse_duration(text: str) -> float | None:
    try:
        return float(text)  # "300", "-1": seconds, as a JSON number would be
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if not body or _GO_PART.sub("", body):
        return None
    return sign * sum(float(n) * _GO_UNITS[unit] for n, unit in _GO_PART.findall(body))


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from '8GB', '512M', '8GiB' or a plain number of bytes (GB: 1000³, GiB: 1024³)."""
    match = _SIZE.match(text)
    if not match or float(match.group(1)) <= 0 or (match.group(3) and not match.group(2)):
        raise InvalidParameterError(
            f"'{text}' is not a memory size; write it like 8GB, 512MB or a number of bytes."
        )
    power = " kmgt".index(match.group(2).lower() or " ")
    base = 1024 if "i" in match.group(3).lower() else 1000
    return int(float(match.group(1)) * base**power)


# ---- which models one HTTP request holds -----------------------------------------------------
@dataclass
class RequestScope:
    keep_alive: float | None = None  # the request's own keep_alive, None: the server's default
    held: dict[str, _Entry] = field(default_factory=dict)


_current: ContextVar[RequestScope | None] = ContextVar("llmkit_request_scope", default=None)


def current_scope() -> RequestScope | None:
    return _current.get()


# ---- the pool --------------------------------------------------------------------------------
@dataclass
class _Entry:
    name: str
    size: int
    pinned: bool
    last_used: float
    expires_at: float
    served: ServedModel | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    in_flight: int = 0
    keep: float = DEFAULT_KEEP_ALIVE  # what the last request asked for
    unload_when_idle: bool = False


@dataclass(frozen=True)
class LoadedModel:
    """What `/api/ps` shows of a model: its memory, its requests and when it goes."""

    name: str
    served: ServedModel
    size: int
    in_flight: int
    pinned: bool
    expires_in: float  # seconds from now; FOREVER when it does not expire


class ModelPool:
    """Loaded models by name, with their leases, expiry and memory.

    `loader(name)` loads a model and `estimate(name)` says the bytes it will take (both raise
    ModelNotFoundError for an unknown name). `names` limits the pool to those models (None: any
    the loader finds); `pinned` ones never expire. `budget()` is the bytes the loaded models may
    take together (None: no limit). `clock` is monotonic seconds (a fake in tests); with
    `reaper` a background thread unloads expired models as they expire.
    """

    def __init__(
        self,
        loader: Callable[[str], ServedModel] | None,
        *,
        estimate: Callable[[str], int] | None = None,
        budget: Callable[[int], int | None] | None = None,
        keep_alive: float = DEFAULT_KEEP_ALIVE,
        names: Collection[str] | None = None,
        pinned: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
        reaper: bool = True,
    ) -> None:
        self._loader = loader
        self._estimate = estimate or (lambda name: 0)
        self._budget = budget or (lambda used: None)
        self.keep_alive = keep_alive
        self.names = list(names) if names is not None else None
        self._pinned = set(pinned)
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._reaper: threading.Thread | None = None
        if reaper:
            self._reaper = threading.Thread(
                target=self._reap_forever, name="llmkit-model-reaper", daemon=True
            )
            self._reaper.start()

    # ---- names ------------------------------------------------------------------------------
    def key(self, name: str) -> str:
        """The pool's name for NAME (Ollama's ':latest' dropped); unknown names in a fixed pool raise."""
        base = name.removesuffix(":latest") or name
        if self.names is None:
            return base
        for candidate in (name, base):
            if candidate in self.names:
                return candidate
        raise ModelNotFoundError(
            f"The model '{name}' is not served here; available: {', '.join(self.names)}."
        )

    # ---- in and out -------------------------------------------------------------------------
    def add(self, served: ServedModel, *, size: int = 0, pinned: bool = True) -> None:
        """Hold a model loaded elsewhere (preloaded at start)."""
        now = self._clock()
        entry = _Entry(served.name, size, pinned, now, now + self.keep_alive, served)
        entry.ready.set()
        with self._lock:
            self._entries[served.name] = entry
            if pinned:
                self._pinned.add(served.name)

    def acquire(self, name: str) -> ServedModel:
        """The model, loaded; held until the current request scope ends (if there is one)."""
        key = self.key(name)
        scope = _current.get()
        if scope is not None and key in scope.held:
            return self._wait(scope.held[key], scope)
        with self._lock:
            entry = self._hold(key, scope)
        if entry is None:
            # Not loaded: estimate (this may read the file's header) outside the lock; an
            # unknown name fails here, before anything is reserved or unloaded.
            size = self._size(key)
            with self._lock:
                entry = self._hold(key, scope)  # another request may have started it meanwhile
                victims: list[_Entry] = []
                load = entry is None
                if entry is None:
                    victims = self._make_room(key, size)
                    now = self._clock()
                    entry = _Entry(key, size, key in self._pinned, now, now + self.keep_alive)
                    self._entries[key] = entry
                    self._hold(key, scope)
            for victim in victims:
                log.info("unloading %s to make room for %s", victim.name, key)
                self._close(victim)
            if load:
                self._load(entry)
        return self._wait(entry, scope)

    def _hold(self, key: str, scope: RequestScope | None) -> _Entry | None:
        """The entry of KEY, marked used (and held by the scope); None when not in the pool."""
        if self._closed:
            raise ModelBusyError("The server is shutting down.")
        entry = self._entries.get(key)
        if entry is not None:
            entry.last_used = self._clock()
            if scope is not None:
                entry.in_flight += 1
                scope.held[key] = entry
        return entry

    def _size(self, key: str) -> int:
        if self._loader is None:
            raise ModelNotFoundError(f"The model '{key}' is not loaded here.")
        return int(self._estimate(key))

    def _load(self, entry: _Entry) -> None:
        """Load into the entry; a failure is kept in it for every waiter (`_wait` raises it)."""
        try:
            if self._loader is None:
                raise ModelNotFoundError(f"The model '{entry.name}' is not loaded here.")
            log.info("loading %s", entry.name)
            served = self._loader(entry.name)
        except BaseException as error:
            with self._lock:
                if self._entries.get(entry.name) is entry:
                    del self._entries[entry.name]
                entry.error = error
            entry.ready.set()
            return
        with self._lock:
            closed = self._closed
            entry.served = served
        entry.ready.set()
        if closed:
            served.close()

    def _wait(self, entry: _Entry, scope: RequestScope | None) -> ServedModel:
        entry.ready.wait()
        if entry.error is not None or entry.served is None:
            with self._lock:
                if scope is not None and scope.held.pop(entry.name, None) is entry:
                    entry.in_flight -= 1
            raise entry.error or ModelBusyError("The server is shutting down.")
        return entry.served

    def _make_room(self, key: str, size: int) -> list[_Entry]:
        """The idle models to unload (least recently used first) so that `size` more bytes fit.

        Called under the lock; they are taken out of the pool here and closed by the caller.
        """
        used = sum(entry.size for entry in self._entries.values())
        budget = self._budget(used)
        if budget is None or used + size <= budget:
            return []
        idle = sorted(
            (e for e in self._entries.values() if self._evictable(e)), key=lambda e: e.last_used
        )
        victims, left = [], used
        for entry in idle:
            if left + size <= budget:
                break
            victims.append(entry)
            left -= entry.size
        if left + size > budget and key not in self._pinned:
            kept = sum(e.size for e in self._entries.values() if e.pinned)
            needs = f"'{key}' needs about {_gib(size)} (the planner's estimate)"
            if kept + size > budget:
                held = f", and the models kept loaded take {_gib(kept)}" if kept else ""
                raise ModelTooLargeError(
                    f"{needs}; the memory budget is {_gib(budget)}{held}. Serve it with a larger "
                    "--memory-budget, or on a machine with more memory."
                )
            raise ModelBusyError(
                f"{needs} and the memory budget of {_gib(budget)} is held by models answering "
                "requests; retry once they are done."
            )
        if left + size > budget:
            log.warning("%s is pinned and loads over the memory budget of %s", key, _gib(budget))
        for entry in victims:
            del self._entries[entry.name]
        return victims

    @staticmethod
    def _evictable(entry: _Entry) -> bool:
        return entry.served is not None and entry.in_flight == 0 and not entry.pinned

    def release(self, scope: RequestScope) -> None:
        """The request is over: its models start their keep_alive (or unload, for 0)."""
        if not scope.held:
            return
        now = self._clock()
        keep = self.keep_alive if scope.keep_alive is None else scope.keep_alive
        with self._lock:
            for entry in scope.held.values():
                entry.in_flight -= 1
                entry.last_used = now
                entry.keep = keep
                entry.expires_at = now if entry.unload_when_idle else now + keep
            scope.held.clear()
            self._wake.notify_all()

    @contextmanager
    def request_scope(self, keep_alive: float | None = None) -> Iterator[RequestScope]:
        """Hold the models acquired inside until the block ends (one HTTP request)."""
        scope = RequestScope(keep_alive)
        token = _current.set(scope)
        try:
            yield scope
        finally:
            _current.reset(token)
            self.release(scope)

    def unload(self, name: str) -> str:
        """Unload a model now ('unloaded'), once its requests end ('unloading'); or say it is
        'not loaded', or 'pinned' (kept for the server's life: it is left loaded)."""
        try:
            key = self.key(name)
        except ModelNotFoundError:
            return "not loaded"
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return "not loaded"
            if entry.pinned:
                return "pinned"
            if entry.in_flight or entry.served is None:
                entry.unload_when_idle = True
                return "unloading"
            del self._entries[key]
        log.info("unloading %s", key)
        self._close(entry)
        return "unloaded"

    def reap(self) -> list[str]:
        """Unload every idle model whose keep_alive has run out; returns their names."""
        now = self._clock()
        with self._lock:
            expired = [e for e in self._entries.values() if self._expired(e, now)]
            for entry in expired:
                del self._entries[entry.name]
        for entry in expired:
            log.info("unloading %s (its keep_alive ran out)", entry.name)
            self._close(entry)
        return [entry.name for entry in expired]

    @staticmethod
    def _expired(entry: _Entry, now: float) -> bool:
        if entry.served is None or entry.in_flight:
            return False
        return not entry.pinned and (entry.unload_when_idle or entry.expires_at <= now)

    def _reap_forever(self) -> None:
        while True:
            with self._wake:
                if self._closed:
                    return
                waits = [
                    e.expires_at - self._clock()
                    for e in self._entries.values()
                    if e.served is not None and not e.in_flight and not e.pinned
                ]
                wait = min(waits, default=FOREVER)
                if wait > 0:
                    self._wake.wait(timeout=min(wait, 3600.0))
                if self._closed:
                    return
            self.reap()

    @staticmethod
    def _close(entry: _Entry) -> None:
        if entry.served is None:
            return
        try:
            entry.served.close()
        except Exception:  # one model failing to close must not keep the others loaded
            log.exception("closing %s failed", entry.name)

    # ---- what is loaded ---------------------------------------------------------------------
    def models(self) -> dict[str, ServedModel]:
        """The loaded models by name (not those still loading)."""
        with self._lock:
            return {k: e.served for k, e in self._entries.items() if e.served is not None}

    def loaded(self) -> list[LoadedModel]:
        now = self._clock()
        with self._lock:
            entries = [e for e in self._entries.values() if e.served is not None]
            return [
                LoadedModel(
                    e.name, e.served, e.size, e.in_flight, e.pinned, self._expires_in(e, now)
                )
                for e in sorted(entries, key=lambda e: e.name)
                if e.served is not None
            ]

    def _expires_in(self, entry: _Entry, now: float) -> float:
        if entry.unload_when_idle:
            return 0.0
        if entry.pinned:
            return FOREVER
        if entry.in_flight:  # its keep_alive starts when the requests end
            return entry.keep
        return max(0.0, entry.expires_at - now)

    def memory_used(self) -> int:
        with self._lock:
            return sum(entry.size for entry in self._entries.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            entries = list(self._entries.values())
            self._entries.clear()
            self._wake.notify_all()
        if self._reaper is not None and self._reaper is not threading.current_thread():
            self._reaper.join(timeout=5)
        for entry in entries:
            self._close(entry)


def _gib(size: float) -> str:
    # Decimal units, as --memory-budget is written and `llmkit ps` shows sizes.
    if size >= 1e8:
        return f"{size / 1e9:.2f} GB"
    return f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size:.0f} bytes"

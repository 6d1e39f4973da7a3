"""Stop strings that may span token boundaries, and incremental UTF-8 decoding of token bytes.

Text is held back while a stop string might still be forming, so nothing past a stop is ever shown.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable


class StopMatcher:
    """Feed it text pieces; it returns what is safe to show, and notices when a stop string appears."""

    def __init__(self, stop_strings: Iterable[str]) -> None:
        self.stop_strings = [s for s in stop_strings if s]
        self._pending = ""
        self.stopped = False
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        """Add text; return the part that can be shown now (possibly empty)."""
        if self.stopped:
            return ""
        self._pending += text
        if not self.stop_strings:
            shown, self._pending = self._pending, ""
            return shown
        first = None
        for stop in self.stop_strings:
            index = self._pending.find(stop)
            if index != -1 and (first is None or index < first[0]):
                first = (index, stop)
        if first is not None:
            self.stopped, self.matched = True, first[1]
            shown, self._pending = self._pending[: first[0]], ""
            return shown
        hold = self._longest_partial_suffix()
        cut = len(self._pending) - hold
        shown, self._pending = self._pending[:cut], self._pending[cut:]
        return shown

    def flush(self) -> str:
        """At the end of generation, release what was held back (no stop string completed)."""
        shown, self._pending = ("" if self.stopped else self._pending), ""
        return shown

    def _longest_partial_suffix(self) -> int:
        """Length of the longest end of the pending text that begins some stop string."""
        best = 0
        for stop in self.stop_strings:
            for length in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:length]):
                    best = length
                    break
        return best


class IncrementalDecoder:
    """Token pieces are bytes, and one character can be split across tokens: decode as they come."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)

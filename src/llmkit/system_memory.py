"""This machine's RAM, read once where it is needed (the planner, the engine's and trainer's checks).

Kept apart from `llmkit.plan` so that loading a model does not import the whole planner.
"""

from __future__ import annotations

import os


def memory_info() -> tuple[int, int | None]:
    """Total and available RAM in bytes (available is None where the OS does not say)."""
    try:
        with open("/proc/meminfo") as handle:
            values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle}
        return values["MemTotal"], values.get("MemAvailable")
    except (OSError, KeyError, ValueError):
        pass
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    return total, None

"""The roles a conversation may hold, checked the same way for the CLI, the library and the APIs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llmkit.errors import InvalidParameterError

ROLES = ("system", "user", "assistant", "tool")
# Other APIs' names for the same roles (OpenAI's "developer" is its newer name for "system").
ROLE_ALIASES = {"developer": "system", "function": "tool"}


def check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages as plain dicts with known roles, or one sentence saying which one is wrong."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidParameterError(
            "Messages are a list of {'role': ..., 'content': ...} dicts (or one string)."
        )
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidParameterError(f"Message {index} is not a dict with 'role' and 'content'.")
        role = message.get("role")
        role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
        if role not in ROLES:
            raise InvalidParameterError(
                f"Message {index} has role {message.get('role')!r}; use one of {', '.join(ROLES)}."
            )
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise InvalidParameterError(f"Message {index} ({role}) needs text as its 'content'.")
        checked.append({**message, "role": role})
    return checked

"""The wire formats' structured-output options read as JSON schemas.

The schemas are checked and compiled by `llmkit.generation.constraints` (size, nesting,
repetition bounds) before any grammar engine sees them.
"""

from __future__ import annotations

from typing import Any

from llmkit.errors import InvalidParameterError

# Any JSON object: what `response_format: json_object` and Ollama's `format: "json"` ask for.
ANY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


def response_format_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema an OpenAI `response_format` asks for (None: free text)."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return ANY_OBJECT_SCHEMA
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidParameterError(
                "response_format.json_schema.schema must be a JSON schema object."
            )
        return schema
    raise InvalidParameterError(
        f"response_format type '{kind}' is not supported; use text, json_object or json_schema."
    )


def ollama_format_schema(format: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """The schema an Ollama `format` asks for: "json", a schema object, or nothing."""
    if format in (None, ""):
        return None
    if format == "json":
        return ANY_OBJECT_SCHEMA
    if isinstance(format, dict):
        return format
    raise InvalidParameterError(f'format must be "json" or a JSON schema, not {format!r}.')

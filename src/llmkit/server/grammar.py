"""The wire formats' structured-output options read as JSON schemas, and those schemas as GBNF.

The schemas are checked by `llmkit.generation.constraints` (size, nesting, repetition bounds)
before any grammar engine sees them.
"""

from __future__ import annotations

from typing import Any

from llmkit.errors import InvalidParameterError
from llmkit.generation.constraints import validate_schema

# llama.cpp's GBNF parser expands repetitions recursively; past this size it refuses (or, far
# past it, overflows its stack), so a longer grammar is refused here in one sentence.
MAX_GBNF_BYTES = 32 * 1024

# Any JSON object: what `response_format: json_object` and Ollama's `format: "json"` ask for.
ANY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


def schema_grammar(schema: dict[str, Any]) -> str:
    """The GBNF grammar (root rule "root") that only admits JSON valid against `schema`."""
    text = validate_schema(schema)  # bounded first: llama.cpp's grammar parser recurses
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar = json_schema_to_gbnf(text)
    except Exception as error:  # the converter raises plain Exceptions for what it cannot express
        reason = (str(error).strip().splitlines() or ["unknown error"])[0][:200].rstrip(".")
        raise InvalidParameterError(
            f"The JSON schema cannot be turned into a grammar: {reason}."
        ) from error
    if len(grammar) > MAX_GBNF_BYTES:
        raise InvalidParameterError(
            f"The JSON schema expands to a {len(grammar):,}-byte grammar; at most "
            f"{MAX_GBNF_BYTES:,} are allowed (lower its maxLength or maxItems)."
        )
    # The converter lets raw control characters into strings, which JSON forbids; keep them out.
    return grammar.replace('char ::= [^"\\\\] |', 'char ::= [^"\\\\\\x00-\\x1F\\x7F] |')


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

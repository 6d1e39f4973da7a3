"""Recipes: a named model made from a base model and a few settings, in Ollama's Modelfile syntax.

    FROM smollm2
    PARAMETER temperature 0.2
    PARAMETER stop "<|im_end|>"
    SYSTEM \"\"\"You answer in one sentence.\"\"\"
    MESSAGE user Hi
    MESSAGE assistant Hello.

A recipe is a manifest that points at the base's weights (nothing is copied) and carries its own
system prompt, sampling defaults, template (a Jinja chat template here, not Ollama's Go templates),
LoRA adapter, opening messages and license. `write_modelfile` turns a manifest back into the text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkit.errors import InvalidParameterError
from llmkit.messages import ROLES
from llmkit.params import OLLAMA_INTEGER_OPTIONS, OLLAMA_OPTIONS, SamplingParams, params_from_ollama

if TYPE_CHECKING:
    from llmkit.store.store import ModelManifest

INSTRUCTIONS = ("FROM", "PARAMETER", "SYSTEM", "TEMPLATE", "ADAPTER", "MESSAGE", "LICENSE")
MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few lines; this refuses a wrong file, not a long one
MAX_MESSAGES = 200
# Ollama's Go templates ({{ .Prompt }}, {{ range .Messages }}) do not run in a Jinja sandbox.
_GO_TEMPLATE = re.compile(r"\{\{-?\s*(\.|range\s|if\s+\.|end\s*-?\}\})")


@dataclass
class Recipe:
    base: str  # a store name, or a path to a GGUF file / HF folder
    parameters: dict[str, Any] = field(default_factory=dict)  # SamplingParams fields
    system: str | None = None
    template: str | None = None
    adapter: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    license: str | None = None


def parse_modelfile(text: str, *, folder: Path | None = None) -> Recipe:
    """A recipe from Modelfile text; relative FROM / ADAPTER paths are read from `folder`."""
    if len(text.encode()) > MAX_RECIPE_BYTES:
        raise InvalidParameterError("The recipe is larger than 1 MB; is it the right file?")
    base: str | None = None
    options: dict[str, Any] = {}
    stops: list[str] = []
    fields_seen: dict[str, str] = {}
    messages: list[dict[str, str]] = []
    for number, instruction, argument in _instructions(text):
        where = f"line {number}"
        if instruction == "FROM":
            base = _path_or_name(argument, folder)
        elif instruction == "PARAMETER":
            key, _, value = argument.partition(" ")
            key, value = key.strip().lower(), _unquote(value.strip())
            if key not in OLLAMA_OPTIONS:
                known = ", ".join(sorted(OLLAMA_OPTIONS))
                raise InvalidParameterError(f"{where}: unknown PARAMETER '{key}'; known: {known}.")
            if key == "stop":
                stops.append(value)
            else:
                options[key] = _number(key, value, where)
        elif instruction == "MESSAGE":
            role, _, content = argument.partition(" ")
            if role.lower() not in ROLES:
                raise InvalidParameterError(
                    f"{where}: MESSAGE needs a role ({', '.join(ROLES)}) and the text."
                )
            messages.append({"role": role.lower(), "content": _unquote(content.strip())})
        else:  # SYSTEM, TEMPLATE, ADAPTER, LICENSE: one each
            fields_seen[instruction] = _unquote(argument)
    if base is None:
        raise InvalidParameterError("The recipe has no FROM line naming its base model.")
    if stops:
        options["stop"] = stops
    adapter = fields_seen.get("ADAPTER")
    return make_recipe(
        base,
        options=options,
        system=fields_seen.get("SYSTEM"),
        template=fields_seen.get("TEMPLATE"),
        adapter=_path_or_name(adapter, folder) if adapter else None,
        messages=messages,
        license=fields_seen.get("LICENSE"),
    )


def make_recipe(
    base: str,
    *,
    options: dict[str, Any] | None = None,
    system: str | None = None,
    template: str | None = None,
    adapter: str | None = None,
    messages: list[dict[str, str]] | None = None,
    license: str | None = None,
) -> Recipe:
    """A checked recipe from its parts (a Modelfile's lines, or Ollama's /api/create fields);
    `options` use Ollama's parameter names."""
    messages = messages or []
    if len(messages) > MAX_MESSAGES:
        raise InvalidParameterError(f"A recipe holds at most {MAX_MESSAGES} MESSAGE lines.")
    for message in messages:
        if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise InvalidParameterError(
                f"Each message needs a role ({', '.join(ROLES)}) and text content."
            )
    parameters = params_from_ollama(options)
    SamplingParams().updated(**parameters)  # one clear error for an out-of-range value
    if template is not None and _GO_TEMPLATE.search(template):
        raise InvalidParameterError(
            "TEMPLATE holds an Ollama Go template; llmkit templates are Jinja chat templates "
            "(as in tokenizer_config.json). Leave TEMPLATE out to use the model's own."
        )
    if template is not None and not template.strip():
        raise InvalidParameterError("TEMPLATE is empty; leave it out to use the model's own.")
    return Recipe(
        base=base,
        parameters=parameters,
        system=system,
        template=template,
        adapter=adapter,
        messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        license=license,
    )


def write_modelfile(
    base: str,
    *,
    parameters: dict[str, Any],
    system: str | None,
    template: str | None,
    adapter: str | None,
    messages: list[dict[str, str]],
    license: str | None,
) -> str:
    """Modelfile text that `parse_modelfile` reads back to the same recipe."""
    to_ollama = {ours: theirs for theirs, ours in OLLAMA_OPTIONS.items()}
    lines = [f"FROM {base}"]
    for key, value in parameters.items():
        if key == "stop":
            lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in value]
        elif key in to_ollama and value is not None:
            lines.append(f"PARAMETER {to_ollama[key]} {value}")
    for name, value in (("SYSTEM", system), ("TEMPLATE", template), ("ADAPTER", adapter)):
        if value is not None:
            lines.append(f"{name} {_quote(value)}")
    lines += [f"MESSAGE {m['role']} {_quote(m['content'])}" for m in messages]
    if license is not None:
        lines.append(f"LICENSE {_quote(license)}")
    return "\n".join(lines) + "\n"


def modelfile_of(manifest: ModelManifest) -> str:
    """The recipe of a stored model (`show --modelfile`); a model that is not a recipe gets one
    over itself."""
    return write_modelfile(
        manifest.base or manifest.name,
        parameters=manifest.parameters,
        system=manifest.system_prompt,
        template=manifest.template_override,
        adapter=manifest.adapter,
        messages=manifest.messages,
        license=manifest.license,
    )


# ---- reading the text -------------------------------------------------------------------
def _instructions(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, argument) for each instruction; a \"\"\" argument may span lines."""
    found: list[tuple[int, str, str]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        instruction = instruction.upper()
        if instruction not in INSTRUCTIONS:
            raise InvalidParameterError(
                f"line {number}: unknown instruction '{instruction}'; a recipe knows "
                f"{', '.join(INSTRUCTIONS)}."
            )
        argument = argument.strip()
        if argument.startswith('"""') and (argument.count('"""') == 1 or argument == '"""'):
            parts = [argument[3:]]
            while True:
                if index >= len(lines):
                    raise InvalidParameterError(f'line {number}: the """ is never closed.')
                following = lines[index]
                index += 1
                if '"""' in following:
                    parts.append(following[: following.index('"""')])
                    break
                parts.append(following)
            argument = '"""' + "\n".join(parts) + '"""'
        if not argument:
            raise InvalidParameterError(f"line {number}: {instruction} needs a value.")
        found.append((number, instruction, argument))
    return found


def _unquote(value: str) -> str:
    if len(value) >= 6 and value.startswith('"""') and value.endswith('"""'):
        return value[3:-3].strip("\n")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return str(json.loads(value))
        except ValueError:  # not a JSON string (a stray backslash, say): the text as written
            return value[1:-1]
    return value


def _quote(value: str) -> str:
    if "\n" in value or '"' in value:
        return '"""' + value + '"""'
    return value if value.strip() == value and value else json.dumps(value)


def _number(key: str, value: str, where: str) -> float | int:
    try:
        return int(value) if key in OLLAMA_INTEGER_OPTIONS else float(value)
    except ValueError:
        kind = "an integer" if key in OLLAMA_INTEGER_OPTIONS else "a number"
        message = f"{where}: PARAMETER {key} must be {kind}, not '{value}'."
        raise InvalidParameterError(message) from None


def _path_or_name(value: str, folder: Path | None) -> str:
    """A store name stays as it is; a path (it has a slash, or is a file) is made absolute."""
    value = _unquote(value.strip())
    looks_like_path = "/" in value or value.endswith(".gguf") or value.startswith(".")
    if not looks_like_path:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute() and folder is not None:
        path = folder / path
    return str(path.resolve())

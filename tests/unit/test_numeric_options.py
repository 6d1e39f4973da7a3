"""Every number a verb takes is bounded: a new option without a check fails here."""

from __future__ import annotations

import typer

from llmkit.cli.app import app

# Numbers checked after parsing, each by the one place that owns the setting.
CHECKED_ELSEWHERE = {
    # SamplingParams (params.py), for every verb that samples
    "--temperature": "params",
    "--top-k": "params",
    "--top-p": "params",
    "--min-p": "params",
    "--repeat-penalty": "params",
    "--seed": "params",
    "--max-tokens": "params",
    # ServerSettings / check_port (server), before anything binds or loads
    "serve --port": "server",
    # next and attention, against the model's own shape
    "next --top": "cli/next.py",
    "next --steps": "cli/next.py",
    "attention --layer": "cli/attention.py",
    "attention --head": "cli/attention.py",
    "agent --max-steps": "agent",
    "logs": "store/history.py",
}


def _numeric_options() -> list[tuple[str, str, bool]]:
    found = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        for name, child in getattr(command, "commands", {}).items():
            walk(child, (*path, name))
        for param in getattr(command, "params", []):
            annotation = str(getattr(param.type_descriptor, "annotation", ""))
            if "int" in annotation or "float" in annotation:
                flag = param.opts[0] if param.opts else param.name
                found.append((" ".join(path), flag, param.callback is not None))

    walk(typer.main.get_command(app), ())
    return found


def test_every_numeric_option_is_bounded() -> None:
    unbounded = [
        f"{verb} {flag}"
        for verb, flag, has_check in _numeric_options()
        if not has_check
        and flag not in CHECKED_ELSEWHERE
        and f"{verb} {flag}" not in CHECKED_ELSEWHERE
        and verb.split()[0] not in CHECKED_ELSEWHERE
    ]
    assert unbounded == [], "give these a range check (cli/options.py at_least/fraction)"


def test_the_walk_sees_the_options() -> None:
    flags = {(verb, flag) for verb, flag, _ in _numeric_options()}
    assert ("run", "--threads") in flags and ("serve", "--max-body") in flags

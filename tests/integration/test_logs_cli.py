"""`llmkit logs` with the real CLI: run and chat exchanges logged, searched, resumed, deleted."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import run_cli


def test_exchanges_are_logged_searched_resumed_and_deleted(
    builtin_model_path, tmp_path: Path
) -> None:
    env = {"LLMKIT_HOME": str(tmp_path / "home")}
    asked = run_cli(
        "run", "smollm2", "What is the capital of France?", "-t", "0", "-n", "8", env=env
    )
    assert asked.returncode == 0, asked.stderr
    assert run_cli("run", "smollm2", "private", "-n", "2", "--no-log", env=env).returncode == 0
    off = run_cli("run", "smollm2", "also private", "-n", "2", env={**env, "LLMKIT_LOG": "0"})
    assert off.returncode == 0
    chatted = run_cli("chat", "-t", "0", "-n", "6", input="Hello there\n", env=env)
    assert chatted.returncode == 0, chatted.stderr
    listed = json.loads(run_cli("logs", "--json", env=env).stdout)
    assert [(e["kind"], e["prompt"]) for e in listed] == [
        ("chat", "Hello there"), ("run", "What is the capital of France?"),
    ]  # fmt: skip
    run_entry = listed[1]
    assert run_entry["answer"] in asked.stdout and run_entry["completion_tokens"] == 8
    assert run_entry["parameters"]["temperature"] == 0
    found = json.loads(run_cli("logs", "-q", "capital France", "--json", env=env).stdout)
    assert [e["id"] for e in found] == [run_entry["id"]]
    shown = run_cli("logs", "show", str(run_entry["id"]), env=env)
    assert "What is the capital of France?" in shown.stdout and "finish: length" in shown.stdout
    resumed = run_cli("chat", "--continue", "-t", "0", "-n", "6", input="And again?\n", env=env)
    assert resumed.returncode == 0 and "1 earlier turns" in resumed.stdout
    chats = [
        e for e in json.loads(run_cli("logs", "--json", env=env).stdout) if e["kind"] == "chat"
    ]
    assert len({e["conversation"] for e in chats}) == 1 and len(chats) == 2
    gone = run_cli("logs", "rm", str(run_entry["id"]), env=env)
    assert gone.returncode == 0 and "Deleted 1 exchange." in gone.stdout
    assert run_cli("logs", "off", env=env).returncode == 0
    run_cli("run", "smollm2", "not kept", "-n", "2", env=env)
    assert len(json.loads(run_cli("logs", "--json", env=env).stdout)) == 2


def test_log_errors_are_one_sentence(builtin_model_path, tmp_path: Path) -> None:
    env = {"LLMKIT_HOME": str(tmp_path / "home")}
    missing = run_cli("logs", "show", "42", env=env)
    assert missing.returncode != 0 and "no logged exchange 42" in missing.stderr
    nothing = run_cli("chat", "--continue", input="hi\n", env=env)
    assert nothing.returncode != 0 and "no logged chat to continue" in nothing.stderr
    assert "Traceback" not in nothing.stderr

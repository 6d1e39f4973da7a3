"""`llmkit chat` driven through a real terminal (pty): turns, commands, Ctrl-C and Ctrl-D."""

import json
import os
import sys
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")


@pytest.fixture
def chat(builtin_model_path):
    child = pexpect.spawn(
        sys.executable,
        ["-m", "llmkit", "chat", "smollm2", "-t", "0", "--context", "2048"],
        env={**os.environ, "COLUMNS": "200", "TERM": "dumb"},
        encoding="utf-8",
        timeout=60,
    )
    child.expect(">>> ")
    yield child
    child.close(force=True)


def test_a_conversation_with_commands(chat, tmp_path: Path) -> None:
    chat.sendline("What is the capital of France?")
    chat.expect("Paris")
    chat.expect(">>> ")
    chat.sendline("/show")
    chat.expect(r"<\|im_start\|>assistant")
    chat.expect(">>> ")
    saved = tmp_path / "conversation.json"
    chat.sendline(f"/save {saved}")
    chat.expect("saved to")
    chat.expect(">>> ")
    messages = json.loads(saved.read_text())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    chat.sendline("/reset")
    chat.expect("conversation cleared")
    chat.sendline(f"/load {saved}")
    chat.expect("loaded 2 messages")
    chat.sendline("/load /nonexistent.json")
    chat.expect("does not exist")
    chat.expect(">>> ")
    chat.sendline("/bogus")
    chat.expect("Unknown command")
    chat.sendeof()
    chat.expect(pexpect.EOF)
    chat.wait()
    assert chat.exitstatus == 0


def test_ctrl_c_stops_the_answer_but_not_the_chat(chat) -> None:
    chat.sendline("Write a very long story about a dragon who learns to bake bread.")
    chat.expect_exact("bake bread.")  # the terminal's echo of the question
    chat.expect(r"\w+ \w+ \w+")  # the answer has started streaming
    chat.sendintr()
    chat.expect(r"\(stopped\)")
    chat.expect(">>> ")
    chat.sendline("/system You are terse.")
    chat.expect("system prompt set")
    chat.sendeof()
    chat.expect(pexpect.EOF)

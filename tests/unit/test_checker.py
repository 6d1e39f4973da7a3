"""The template checker: each check catches its deliberately broken template; real templates pass.

The broken templates live in tests/data/templates/broken/; the real ones in tests/data/templates/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmkit.chat.checker import CHECKS, TemplateSubject, check_template, load_subject

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "data" / "templates"
BROKEN_DIR = TEMPLATES_DIR / "broken"
# What a bare ChatML-shaped file is checked with (a tokenizer that adds BOS itself).
TOKENS = {"bos_token": "<s>", "eos_token": "<|im_end|>", "add_bos_token": True}

# broken template -> (check, severity) it must produce; the whole report fails only for errors.
BROKEN: dict[str, tuple[str, str]] = {
    "does-not-compile": ("renders", "error"),
    "bos-written-twice": ("bos", "error"),
    "doubled-bos": ("bos", "warning"),
    "missing-bos": ("bos", "warning"),
    "no-end-of-turn": ("stop-token", "error"),
    "no-generation-prompt": ("generation-prompt", "error"),
    "generation-prompt-mismatch": ("generation-prompt", "warning"),
    "system-raises": ("system-role", "warning"),
    "system-dropped": ("system-role", "error"),
    "history-rewritten": ("prefix-stable", "warning"),
    "assistant-altered": ("assistant-located", "error"),
    "ignores-tools": ("tools", "info"),
    "tools-mentioned-not-rendered": ("tools", "warning"),
    "tools-crash": ("tools", "warning"),
}

# What each real template legitimately gets (documented in docs/templates.md). A file dropped into
# the folder without an entry here is only required to render and to have no errors.
REAL_FINDINGS: dict[str, set[tuple[str, str]]] = {
    "c4ai-command-r-v01": {("bos", "info"), ("tools", "info")},
    "deepseek-r1-distill-qwen-32b": {("bos", "warning"), ("tools", "info")},
    "gemma-3-1b-it": {
        ("bos", "warning"),
        ("stop-token", "warning"),
        ("eos-produced", "warning"),
        ("tools", "info"),
    },
    "granite-3.1-1b-a400m-instruct": set(),
    "llama-2-7b-chat": {("bos", "info"), ("tools", "info")},
    "llama-3.2-3b-instruct": {("bos", "info")},
    "mistral-7b-instruct-v0.3": {("bos", "warning"), ("system-role", "warning"), ("tools", "info")},
    "phi-3.5-mini-instruct": {
        ("stop-token", "warning"),
        ("prefix-stable", "warning"),
        ("tools", "info"),
    },
    "qwen2.5-0.5b-instruct": set(),
    "zephyr-7b-beta": {("tools", "info")},
}


def _findings(report) -> set[tuple[str, str]]:
    return {(finding.check, finding.severity) for finding in report.findings}


def test_every_check_has_a_broken_template() -> None:
    assert {check for check, _ in BROKEN.values()} | {"eos-produced"} == set(CHECKS)
    assert {path.stem for path in BROKEN_DIR.glob("*.jinja")} == set(BROKEN)


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_template_is_caught(name: str) -> None:
    check, severity = BROKEN[name]
    report = check_template(load_subject(str(BROKEN_DIR / f"{name}.jinja"), **TOKENS))
    assert (check, severity) in _findings(report)
    assert report.ok == (severity != "error")
    finding = next(f for f in report.findings if f.check == check)
    assert finding.title and finding.explanation and finding.fix


def test_template_that_never_writes_eos() -> None:
    # Turns end with <|im_end|>, but the EOS is another token the template never writes.
    subject = load_subject(
        str(BROKEN_DIR / "ignores-tools.jinja"), bos_token="<s>", eos_token="</s>"
    )
    report = check_template(subject)
    assert ("eos-produced", "warning") in _findings(report)
    assert ("stop-token", "warning") in _findings(report)
    # With the end-of-turn token in the stop set, a missing EOS is only worth a note.
    with_eot = TemplateSubject(**{**subject.__dict__, "eot_token": "<|im_end|>"})
    assert ("eos-produced", "info") in _findings(check_template(with_eot))


def test_ignored_tools_are_an_error_when_tools_are_requested() -> None:
    subject = load_subject(str(BROKEN_DIR / "ignores-tools.jinja"), **TOKENS)
    report = check_template(subject, tools_requested=True)
    assert ("tools", "error") in _findings(report)
    assert not report.ok


def test_a_template_that_does_not_compile_skips_the_rest() -> None:
    report = check_template(load_subject(str(BROKEN_DIR / "does-not-compile.jinja")))
    assert report.status("renders") == "error"
    assert all(report.status(check) == "skipped" for check in CHECKS if check != "renders")
    assert "line 1" in report.findings[0].explanation


@pytest.mark.parametrize("path", sorted(TEMPLATES_DIR.glob("*.json")), ids=lambda path: path.stem)
def test_real_templates(path: Path) -> None:
    report = check_template(load_subject(str(path)))
    assert report.ok, [f.title for f in report.findings if f.severity == "error"]
    if path.stem in REAL_FINDINGS:
        assert _findings(report) == REAL_FINDINGS[path.stem]


@pytest.mark.parametrize("name", ["chatml", "llama3", "gemma", "mistral", "phi3", "granite"])
def test_builtin_templates_have_no_problems(name: str) -> None:
    report = check_template(load_subject(name))
    assert report.ok
    assert not {f for f in report.findings if f.severity == "warning"}


def test_report_json_lists_every_check() -> None:
    report = check_template(load_subject(str(BROKEN_DIR / "no-generation-prompt.jinja"), **TOKENS))
    data = json.loads(json.dumps(report.to_json()))
    assert [check["id"] for check in data["checks"]] == list(CHECKS)
    assert data["ok"] is False
    assert {"check", "severity", "title", "explanation", "fix"} <= set(data["findings"][0])


def test_tokenizer_config_json_is_read(tmp_path: Path) -> None:
    config = {
        "chat_template": [
            {"name": "default", "template": "{{ bos_token }}{{ messages[0]['content'] }}"}
        ],
        "bos_token": {"content": "<s>", "special": True},
        "eos_token": "</s>",
        "add_bos_token": False,
        "added_tokens_decoder": {
            "1": {"content": "<s>", "special": True},
            "2": {"content": "</s>", "special": True},
        },
    }
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps(config))
    subject = load_subject(str(path))
    assert subject.template.startswith("{{ bos_token }}")
    assert (subject.bos_token, subject.eos_token, subject.add_bos_token) == ("<s>", "</s>", False)
    assert subject.special_tokens == {"<s>": 1, "</s>": 2}

"""The checker's one-line verdicts: a warning reads as a problem, a check that could not run says
why instead of passing, and an empty or message-less template is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmkit.chat.builtin_templates import BUILTINS
from llmkit.chat.checker import CHECKS, TemplateSubject, check_template, load_subject
from llmkit.chat.template import select_template, template_argument
from llmkit.cli.output import _make_console
from llmkit.cli.prompt import render_check_report
from llmkit.errors import InvalidParameterError

CHATML = BUILTINS["chatml"]


def _report_text(report) -> str:
    console = _make_console(stderr=False)
    with console.capture() as captured:
        render_check_report(console, report)
    return captured.get()


def test_a_warning_names_the_problem_not_the_check() -> None:
    # <|im_end|> ends turns, but the declared stop set is only </s>.
    subject = TemplateSubject("t", CHATML.text, "file", "<s>", "</s>", add_bos_token=False)
    report = check_template(subject)
    assert report.status("stop-token") == "warning"
    assert "is not one of the model's stop tokens" in report.summary("stop-token")
    line = next(line for line in _report_text(report).splitlines() if "stop-token" in line)
    assert "is not one of the model's stop tokens" in line
    assert CHECKS["stop-token"] not in line  # the question asked reads like a pass


def test_a_check_that_cannot_run_is_skipped_with_its_reason() -> None:
    subject = TemplateSubject("t", CHATML.text, "file")  # no BOS or EOS token known
    report = check_template(subject)
    assert report.status("bos") == "skipped"
    assert report.summary("bos").startswith("not checked: no BOS token is known")
    assert report.status("eos-produced") == "skipped"
    checks = {check["id"]: check for check in report.to_json()["checks"]}
    assert checks["bos"]["status"] == "skipped"
    assert "--bos" in checks["bos"]["summary"]
    assert checks["system-role"] == {
        "id": "system-role",
        "description": CHECKS["system-role"],
        "status": "pass",
        "summary": CHECKS["system-role"],
    }


def test_a_template_that_drops_the_user_message_fails_renders() -> None:
    report = check_template(TemplateSubject("t", "{{ bos_token }}hello", "file", "<s>", "</s>"))
    assert report.status("renders") == "error"
    assert not report.ok
    assert all(report.status(check) == "skipped" for check in CHECKS if check != "renders")
    assert "user's message" in report.summary("bos")


@pytest.mark.parametrize("content", ["", "  \n"])
def test_an_empty_template_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jinja"
    path.write_text(content)
    with pytest.raises(InvalidParameterError, match="is empty"):
        template_argument(str(path))  # prompt/run/chat --template
    with pytest.raises(InvalidParameterError, match="is empty"):
        load_subject(str(path))  # template check FILE
    config = tmp_path / "tokenizer_config.json"
    config.write_text('{"chat_template": "   "}')
    with pytest.raises(InvalidParameterError, match="is empty"):
        template_argument(str(config))


def test_an_empty_override_is_refused_not_ignored() -> None:
    with pytest.raises(InvalidParameterError, match="is empty"):
        select_template({"chat_template": CHATML.text}, override="")

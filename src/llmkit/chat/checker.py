"""The template checker: renders probe conversations and reports what will break chat or fine-tuning.

Every check works by rendering (never by recognising known formats), so it applies to any template.
Each finding has a severity, an explanation of what goes wrong in practice, and the fix.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from llmkit.chat.builtin_templates import BUILTINS
from llmkit.chat.template import (
    Message,
    TemplateRenderError,
    chat_template_from_config,
    compile_template,
    describe_template_source,
    end_of_turn_text,
    parse_config_json,
    render_chat_template,
    require_template_text,
    select_template,
)
from llmkit.errors import LlmkitError, ModelNotFoundError

Severity = Literal["error", "warning", "info"]

# The checks, in the order they run, with the one-line question each answers.
CHECKS: dict[str, str] = {
    "renders": "the template compiles and renders a user message into the text",
    "bos": "the BOS token appears exactly once at the start",
    "stop-token": "the token that ends an assistant turn is a stop token",
    "eos-produced": "the template writes the EOS token somewhere",
    "generation-prompt": "add_generation_prompt=True ends the prompt exactly where an answer starts",
    "system-role": "a system message is rendered",
    "prefix-stable": "each conversation renders as a prefix of its continuation",
    "assistant-located": "assistant messages appear verbatim in the text",
    "tools": "tool definitions reach the text",
}

_ANSWERS = ("LLMKIT_ANSWER_ONE", "LLMKIT_ANSWER_TWO")
_SYSTEM_TEXT = "LLMKIT_SYSTEM_PROMPT"
_PROBE_TOOL = "llmkit_probe_tool"
_USER = {"role": "user", "content": "Hello there."}
_CONVERSATION: list[Message] = [
    _USER,
    {"role": "assistant", "content": _ANSWERS[0]},
    {"role": "user", "content": "And one more thing."},
    {"role": "assistant", "content": _ANSWERS[1]},
]
_PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": _PROBE_TOOL,
            "description": "A tool the checker looks for in the rendered text.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


@dataclass(frozen=True)
class TemplateSubject:
    """A template with what it is rendered with: the model's special tokens and BOS setting."""

    label: str
    template: str
    source: str  # "model", "override", "builtin:<name>" or "file"
    bos_token: str | None = None
    eos_token: str | None = None
    eot_token: str | None = None
    add_bos_token: bool | None = None  # does the tokenizer add BOS itself? None: unknown
    special_tokens: dict[str, int] = field(default_factory=dict)
    fallback: bool = False  # a built-in chosen because the model has no template of its own

    @property
    def description(self) -> str:
        return describe_template_source(self.source, fallback=self.fallback)

    @property
    def stop_tokens(self) -> set[str]:
        """The model's declared stop set: what runtimes other than llmkit stop on."""
        return {token for token in (self.eos_token, self.eot_token) if token}


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    title: str
    explanation: str
    fix: str


@dataclass
class CheckReport:
    subject: str
    source: str
    findings: list[Finding]
    description: str = ""
    skipped: dict[str, str] = field(default_factory=dict)  # check -> why it could not run

    @property
    def ok(self) -> bool:
        """True when nothing is an error (warnings and notes do not fail a check)."""
        return not any(finding.severity == "error" for finding in self.findings)

    def status(self, check: str) -> str:
        """ "pass" (the check ran and found nothing), "skipped" (it could not run), or the worst
        severity it found."""
        worst = self._worst(check)
        if worst is not None:
            return worst.severity
        return "skipped" if check in self.skipped else "pass"

    def summary(self, check: str) -> str:
        """One line beside the status: what holds for a pass, the problem otherwise."""
        worst = self._worst(check)
        if worst is not None:
            return worst.title
        if check in self.skipped:
            return f"not checked: {self.skipped[check]}"
        return CHECKS[check]

    def _worst(self, check: str) -> Finding | None:
        found = [finding for finding in self.findings if finding.check == check]
        order = ("error", "warning", "info")
        return min(found, key=lambda finding: order.index(finding.severity), default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "source": self.source,
            "description": self.description,
            "ok": self.ok,
            "checks": [
                {
                    "id": check,
                    "description": text,
                    "status": self.status(check),
                    "summary": self.summary(check),
                }
                for check, text in CHECKS.items()
            ],
            "findings": [asdict(finding) for finding in self.findings],
        }


def _excerpt(text: str, limit: int = 48) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _tail(text: str, limit: int = 48) -> str:
    return repr(text if len(text) <= limit else "…" + text[-limit:])


class _Checker:
    def __init__(self, subject: TemplateSubject, tools_requested: bool) -> None:
        self.subject = subject
        self.tools_requested = tools_requested
        self.findings: list[Finding] = []
        self.skipped: dict[str, str] = {}

    def render(self, messages: list[Message], generation_prompt: bool, **kwargs: Any) -> str:
        return render_chat_template(
            self.subject.template,
            messages,
            bos_token=self.subject.bos_token,
            eos_token=self.subject.eos_token,
            add_generation_prompt=generation_prompt,
            **kwargs,
        )

    def add(self, check: str, severity: Severity, title: str, explanation: str, fix: str) -> None:
        self.findings.append(Finding(check, severity, title, explanation, fix))

    def skip(self, check: str, reason: str) -> None:
        """Record that CHECK could not run, so it is not reported as a pass."""
        self.skipped.setdefault(check, reason)

    # ---- the checks ---------------------------------------------------------------------
    def renders(self) -> str | None:
        """None when a one-message conversation renders with the message in it; else why not."""
        try:
            compile_template(self.subject.template)
            text = self.render([_USER], True)
        except TemplateRenderError as error:
            self.add(
                "renders",
                "error",
                "The template cannot render a simple conversation",
                f"Rendering one user message failed: {error}",
                "Fix the template (or use a built-in one with --template NAME; see "
                "`llmkit template --names`).",
            )
            return "the template does not render"
        if _USER["content"] not in text:
            # Every other check would report a symptom of this one problem.
            self.add(
                "renders",
                "error",
                "The user's message is not in the rendered text",
                f"One user message renders as {_excerpt(text)}, without the message's words: "
                "the model would never see what the user wrote.",
                "Render each message's content (e.g. {{ message['content'] }} inside a loop "
                "over messages).",
            )
            return "the template does not render the user's message"
        return None

    def bos(self) -> None:
        bos, adds = self.subject.bos_token, self.subject.add_bos_token
        if not bos:
            self.skip("bos", "no BOS token is known (pass --bos TOKEN for a bare template)")
            return
        text = self.render([_USER], True)
        writes = text.startswith(bos)
        if text.startswith(bos * 2):
            self.add(
                "bos",
                "error",
                "The template writes the BOS token twice",
                f"The prompt starts with {bos!r} twice. A doubled BOS is out of distribution: "
                "models answer noticeably worse, and fine-tunes learn the wrong start.",
                "Write {{ bos_token }} once, at the very start of the template.",
            )
        elif writes and adds:
            self.add(
                "bos",
                "warning",
                "BOS is doubled if the text is tokenized with special tokens added",
                f"The template writes {bos!r} and the tokenizer adds one too (add_bos_token=true). "
                "llmkit and apply_chat_template(tokenize=True) tokenize chat prompts without adding "
                "it, but tools that tokenize the rendered text with defaults (tokenizer(text), "
                "llama.cpp's add_special, many training scripts) feed two BOS tokens.",
                "Tokenize rendered chat text with add_special_tokens=False (llama.cpp: "
                "add_special=false), or drop {{ bos_token }} from the template.",
            )
        elif not writes and adds:
            self.add(
                "bos",
                "warning",
                "The prompt has no BOS token",
                f"The tokenizer expects {bos!r} at the start (add_bos_token=true) but the template "
                "does not write it, and chat prompts are tokenized without adding it (llmkit, "
                "apply_chat_template), so the model never sees its start token.",
                "Start the template with {{ bos_token }}.",
            )
        elif writes and adds is None:
            self.add(
                "bos",
                "info",
                "Whether the tokenizer also adds BOS is unknown",
                f"The template writes {bos!r}; if the tokenizer adds one too (add_bos_token), "
                "tokenizing the text with special tokens added doubles it.",
                "Pass --add-bos or --no-add-bos to check this, or tokenize chat text without "
                "special tokens.",
            )

    def stop_token(self) -> str | None:
        subject = self.subject
        end = end_of_turn_text(
            subject.template,
            bos_token=subject.bos_token,
            eos_token=subject.eos_token,
            special_tokens=subject.special_tokens,
        )
        if end is None:
            after = self._after_answer()
            if after is None:
                self.skip(
                    "stop-token",
                    "the assistant's answer is not in the text (see assistant-located)",
                )
                return None
            self.add(
                "stop-token",
                "error",
                "Assistant turns do not end with a special token",
                f"After an assistant's words the template writes {_excerpt(after)}, which is not a "
                "special token, so there is no token for the model to produce when it is done: "
                "it runs on, and a fine-tune never learns to stop.",
                "End every assistant message with the end-of-turn token "
                "(e.g. {{ message['content'] + eos_token }}).",
            )
            return None
        stops = subject.stop_tokens
        if not stops:
            self.add(
                "stop-token",
                "info",
                "The model's stop tokens are unknown",
                f"Assistant turns end with {end!r}, but no EOS token was given to compare with.",
                "Pass --eos TOKEN to check the stop set.",
            )
        elif end not in stops:
            self.add(
                "stop-token",
                "warning",
                f"{end} ends assistant turns but is not one of the model's stop tokens",
                f"The model ends its answers with {end!r}, but its declared stop set is "
                f"{sorted(stops)}. llmkit adds the end-of-turn token to its stop tokens itself; "
                "runtimes that stop only on EOS will run on past the answer and invent the next "
                "turn.",
                f"Add {end!r} to the model's stop tokens (generation_config.json eos_token_id, "
                "the GGUF tokenizer.ggml.eot_token_id, or a recipe's stop parameter).",
            )
        return end

    def eos_produced(self, end: str | None) -> None:
        eos = self.subject.eos_token
        if not eos:
            self.skip("eos-produced", "no EOS token is known (pass --eos TOKEN)")
            return
        if end is None:
            self.skip("eos-produced", "no end-of-turn token was found (see stop-token)")
            return
        if end == eos:
            return  # assistant turns end with the EOS token itself
        try:
            text = self.render(_CONVERSATION, False)
        except TemplateRenderError:
            self.skip("eos-produced", "a two-turn conversation does not render")
            return
        if eos in text:
            return
        stops_on_end = end is not None and end in self.subject.stop_tokens
        self.add(
            "eos-produced",
            "info" if stops_on_end else "warning",
            f"The template never writes the EOS token {eos}"
            + (
                f"; it relies on {end} to stop"
                if stops_on_end
                else f", and {end} is not a declared stop token"
            ),
            f"No rendered conversation contains {eos!r}, so a model trained on this format never "
            f"learns to produce it; stopping relies on {end!r}"
            + (" (which is in the stop set)." if stops_on_end else ", which is not a stop token."),
            f"Make {end!r} a stop token, or end assistant turns with {{{{ eos_token }}}}.",
        )

    def generation_prompt(self) -> None:
        answer = _ANSWERS[0]
        try:
            prompt = self.render([_USER], True)
            answered = self.render([_USER, {"role": "assistant", "content": answer}], False)
        except TemplateRenderError:
            self.skip("generation-prompt", "an answered conversation does not render")
            return
        if answer not in answered:
            self.skip("generation-prompt", "the answer is not in the text (see assistant-located)")
            return
        if not answered.startswith(prompt):
            common = _common_prefix(prompt, answered)
            self.add(
                "generation-prompt",
                "warning",
                "The generation prompt differs from how answers are rendered",
                f"With add_generation_prompt=True the prompt continues {_excerpt(prompt[common:])}, "
                f"but an answered turn continues {_excerpt(answered[common:])}. The model is prompted "
                "in a form it was not trained on, and the prompt's KV cache cannot be reused.",
                "Make the generation prompt exactly the text that precedes assistant content.",
            )
            return
        between = answered[len(prompt) : answered.index(answer)]
        if between.strip():
            self.add(
                "generation-prompt",
                "error",
                "No generation prompt",
                f"With add_generation_prompt=True the prompt ends after the user's turn "
                f"({_tail(prompt)}), but every answer is preceded by {between!r}. The model has to "
                "write the assistant header itself, and often continues the user's turn instead.",
                f"Add {{% if add_generation_prompt %}}{{{{ {between!r} }}}}{{% endif %}} at the end.",
            )

    def system_role(self) -> None:
        try:
            text = self.render([{"role": "system", "content": _SYSTEM_TEXT}, _USER], True)
        except TemplateRenderError as error:
            self.add(
                "system-role",
                "warning",
                "The system role is not supported",
                f"A conversation with a system message makes the template raise: {error.reason}. "
                "`--system` and recipes with a system prompt fail with this template.",
                "Put the instructions into the first user message, or use a template that places "
                "the system prompt (e.g. the built-in gemma and mistral ones merge it into the first "
                "user turn).",
            )
            return
        if _SYSTEM_TEXT not in text:
            self.add(
                "system-role",
                "error",
                "The system message is silently dropped",
                "A system message renders without error but its text is not in the prompt: the "
                "model never sees its instructions and nothing says so.",
                "Render messages with role 'system' (or raise_exception for them, so it is visible).",
            )

    def prefix_stable(self) -> None:
        renders: list[tuple[str, str]] = []
        try:
            for count in range(1, len(_CONVERSATION) + 1):
                history = _CONVERSATION[:count]
                renders.append((f"{count} message(s)", self.render(history, False)))
                if history[-1]["role"] == "user":
                    label = f"{count} message(s) + generation prompt"
                    renders.append((label, self.render(history, True)))
        except TemplateRenderError:
            self.skip("prefix-stable", "a multi-turn conversation does not render")
            return
        for (before_label, before), (after_label, after) in pairwise(renders):
            if after_label.endswith("prompt") or after.startswith(before):
                continue
            common = _common_prefix(before, after)
            self.add(
                "prefix-stable",
                "warning",
                "Rendering is not prefix-stable",
                f"The render of {before_label} is not a prefix of the render of {after_label}: at "
                f"character {common} it has {_excerpt(before[common:])} where the longer "
                f"conversation has {_excerpt(after[common:])}. Earlier turns change when a turn is "
                "added, so the KV cache cannot be reused between turns and training masks built "
                "turn by turn are off.",
                "Render each message the same way whatever follows it (no 'loop.last' or "
                "end-of-conversation special cases inside earlier turns).",
            )
            return
        for (before_label, before), (after_label, after) in pairwise(renders):
            if after_label.endswith("prompt") and not after.startswith(before):
                self.add(
                    "prefix-stable",
                    "warning",
                    "The generation prompt rewrites earlier text",
                    f"Adding the generation prompt to {before_label} changes the text before it.",
                    "Only append text when add_generation_prompt is true.",
                )
                return

    def assistant_located(self) -> None:
        try:
            text = self.render(_CONVERSATION, False)
        except TemplateRenderError as error:
            self.add(
                "assistant-located",
                "error",
                "A two-turn conversation does not render",
                f"user/assistant/user/assistant makes the template raise: {error.reason}",
                "Support alternating user and assistant turns.",
            )
            return
        missing = [answer for answer in _ANSWERS if text.count(answer) != 1]
        if missing:
            self.add(
                "assistant-located",
                "error",
                "Assistant content cannot be located in the text",
                f"{len(missing)} of 2 assistant messages do not appear exactly once, verbatim. A "
                "training mask (learn only the assistant's tokens) cannot be built, and history "
                "is not what the model said.",
                "Render assistant content unchanged, exactly once.",
            )

    def tools(self) -> None:
        mentions_tools = re.search(r"\btools\b", self.subject.template) is not None
        try:
            text = self.render([_USER], True, tools=_PROBE_TOOLS)
        except TemplateRenderError as error:
            self.add(
                "tools",
                "error" if self.tools_requested else "warning",
                "The template fails when tools are given",
                f"Rendering with a tool definition raised: {error.reason}",
                "Fix the template's tool branch, or do not pass tools to this model.",
            )
            return
        if _PROBE_TOOL in text:
            return
        if self.tools_requested:
            severity: Severity = "error"
            title = "Tools were requested but the template ignores them"
        elif mentions_tools:
            severity, title = "warning", "The template mentions tools but does not render them"
        else:
            severity, title = "info", "The template has no tool support"
        self.add(
            "tools",
            severity,
            title,
            "A tool definition passed with the conversation does not appear in the rendered "
            "text, so the model never learns the tool exists.",
            "Use a model whose template renders `tools`, or describe the tools in the system "
            "prompt yourself.",
        )

    def _after_answer(self) -> str | None:
        """The text right after an assistant message, or None when the message cannot be found."""
        try:
            text = self.render([_USER, {"role": "assistant", "content": _ANSWERS[0]}], False)
        except TemplateRenderError:
            return None
        return text.split(_ANSWERS[0], 1)[1] if _ANSWERS[0] in text else None


def _common_prefix(first: str, second: str) -> int:
    """Where two texts part, moved back to the start of a token they part inside (`<|end|>`)."""
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    opening = max(
        first.rfind("<", max(0, length - 24), length), first.rfind("[", max(0, length - 24), length)
    )
    if opening >= 0 and not re.search(r"[>\]\s]", first[opening:length]):
        return opening
    return length


def check_template(subject: TemplateSubject, *, tools_requested: bool = False) -> CheckReport:
    """Run every check on a template; the report's `ok` is False when any finding is an error."""
    checker = _Checker(subject, tools_requested)
    report = CheckReport(
        subject.label, subject.source, checker.findings, subject.description, checker.skipped
    )
    broken = checker.renders()
    if broken:
        for check in CHECKS:
            if check != "renders":
                checker.skip(check, broken)
        return report
    checker.bos()
    end = checker.stop_token()
    checker.eos_produced(end)
    checker.generation_prompt()
    checker.system_role()
    checker.prefix_stable()
    checker.assistant_located()
    checker.tools()
    return report


# ---- what to check: a model, a template file, or a built-in template ----------------------------
_TEMPLATE_SUFFIXES = {".jinja", ".jinja2", ".j2", ".tmpl", ".txt"}


def load_subject(
    target: str,
    *,
    template: str | None = None,
    bos_token: str | None = None,
    eos_token: str | None = None,
    add_bos_token: bool | None = None,
    home: str | None = None,
) -> TemplateSubject:
    """A model (store name or weights path), a template file (.jinja or .json), or a built-in name.

    `template` overrides the template (a built-in name or template text) while keeping the model's
    tokens; the token options override what the target says.
    """
    path = Path(target).expanduser()
    if path.is_file() and (path.suffix == ".json" or path.suffix in _TEMPLATE_SUFFIXES):
        subject = _subject_from_file(path)
    else:
        subject = _subject_from_model_or_builtin(target, template, home)
    changes = {
        "bos_token": bos_token if bos_token is not None else subject.bos_token,
        "eos_token": eos_token if eos_token is not None else subject.eos_token,
        "add_bos_token": add_bos_token if add_bos_token is not None else subject.add_bos_token,
    }
    if template is not None and subject.source == "file":
        from llmkit.store.model_info import ModelInfo

        chosen = select_template(ModelInfo(), override=template)
        assert chosen is not None
        changes["source"], changes["template"] = chosen
    return TemplateSubject(**{**asdict(subject), **changes})


def _subject_from_model_or_builtin(
    target: str, template: str | None, home: str | None
) -> TemplateSubject:
    from llmkit.store.store import ModelStore

    try:
        manifest = ModelStore(home).resolve(target)
    except ModelNotFoundError as error:
        if target in BUILTINS:
            builtin = BUILTINS[target]
            return TemplateSubject(
                target,
                builtin.text,
                f"builtin:{target}",
                builtin.bos_token,
                builtin.eos_token,
                builtin.eot_token,
            )
        raise ModelNotFoundError(
            f"{error} '{target}' is not a template file (.jinja, .json) or a built-in template "
            "name either."
        ) from error
    info = manifest.info
    chosen = select_template(info, recipe_override=manifest.template_override, override=template)
    if chosen is None:
        raise LlmkitError(
            f"'{manifest.name}' has no chat template and none of the built-in ones fits its special "
            "tokens; choose one with --template NAME (see `llmkit template --names`)."
        )
    source, text = chosen
    fallback = source.startswith("builtin:") and not (
        template or manifest.template_override or info.chat_template
    )
    return TemplateSubject(
        manifest.name,
        text,
        source,
        info.bos_token,
        info.eos_token,
        info.eot_token,
        info.add_bos_token,
        dict(info.special_tokens),
        fallback,
    )


def _token_text(value: Any) -> str | None:
    # tokenizer_config.json writes tokens either as text or as {"content": text, ...}.
    return value.get("content") if isinstance(value, dict) else value


def _subject_from_file(path: Path) -> TemplateSubject:
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".json":
        return TemplateSubject(
            path.name, require_template_text(text, f"The template file {path}"), "file"
        )
    data = parse_config_json(path, text)
    template = chat_template_from_config(data, path)
    special = data.get("special_tokens")
    if isinstance(special, list):  # the shared test files: token texts in id order
        tokens = {str(token): index for index, token in enumerate(special)}
    elif isinstance(special, dict):
        tokens = {str(token): int(index) for token, index in special.items()}
    else:  # tokenizer_config.json: added_tokens_decoder {"id": {"content": ..., "special": ...}}
        decoder = data.get("added_tokens_decoder") or {}
        tokens = {
            entry["content"]: int(index)
            for index, entry in decoder.items()
            if isinstance(entry, dict) and entry.get("special") and entry.get("content")
        }
    add_bos = data.get("add_bos_token")
    return TemplateSubject(
        path.name,
        template,
        "file",
        _token_text(data.get("bos_token")),
        _token_text(data.get("eos_token")),
        _token_text(data.get("eot_token")),
        add_bos if isinstance(add_bos, bool) else None,
        tokens,
    )

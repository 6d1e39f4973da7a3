"""Untrusted templates: known template-injection payloads are refused, and runaway work is bounded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llmkit.chat.template import TemplateRenderError, render_chat_template

MESSAGES = [{"role": "user", "content": "hi"}]

# Each payload, if it ran, would reach Python internals; here it must raise or render nothing.
PAYLOADS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__()[104].__init__.__globals__['sys'] }}",
    "{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ joiner.__init__.__globals__.os.system('touch {marker}') }}",
    "{{ lipsum.__globals__['os'].popen('touch {marker}').read() }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.popen('touch {marker}') }}",
    "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch {marker}') }}",
    "{{ namespace.__init__.__globals__.os.system('touch {marker}') }}",
    "{{ raise_exception.__globals__['os'].system('touch {marker}') }}",
    "{{ strftime_now.__globals__.__builtins__.open('{marker}', 'w').write('x') }}",
    "{{ dict.__call__.__globals__.os.system('touch {marker}') }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ (messages | attr('__class__')).__base__.__subclasses__() }}",
    "{{ '{0.__class__.__base__.__subclasses__}'.format(messages) }}",
    "{{ messages[0].__class__.__init__.__globals__ }}",
    "{{ messages.append('injected') }}{{ messages | length }}",
    "{{ messages[0].update({'role': 'system'}) }}",
    "{% set ns = namespace(__class__=1) %}",
    "{% set ns = namespace() %}{% set ns._private = 1 %}",
    "{% include '{marker}' %}",
    "{% import 'os' as os %}{{ os.system('touch {marker}') }}",
    "{% extends '/etc/passwd' %}",
    "{% from 'os' import system %}{{ system('touch {marker}') }}",
]

# Loops and expressions that would run for hours or take all memory if they were not bounded.
RUNAWAYS = [
    "{% for i in range(10**9) %}x{% endfor %}",
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "{% for i in range(99999) %}{% for j in range(99999) %}{{ j }}{% endfor %}{% endfor %}",
    "{{ 'x' * 10**10 }}",
    "{{ ['x'] * 10**10 }}",
    "{{ 9 ** (9 ** 9) }}",
    "{{ 'x'.center(10**10) }}",
    "{{ 'x' | center(10**10) }}",
    "{{ 'x\nx' | indent(10**10) }}",
    "{{ [1] | batch(10**10) | list }}",
    "{% set ns = namespace(s='x' * 100000) %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% macro grow(s, n) %}{{ grow(s ~ s, n - 1) if n else s | length }}{% endmacro %}{{ grow('x' * 1000, 40) }}",
    "{% for x in [1, 1] recursive %}{{ loop([1, 1]) }}{% endfor %}",
    "{% macro forever() %}{{ forever() }}{% endmacro %}{{ forever() }}",
    "{% for i in range(9999) %}{{ 'x' * 10000 }}{% endfor %}",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_injection_payloads_never_execute(payload: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    template = payload.replace("{marker}", str(marker))
    try:
        rendered = render_chat_template(template, MESSAGES)
    except TemplateRenderError:
        rendered = ""
    assert not marker.exists()
    # Nothing of Python's internals leaks into the text either.
    for leak in ("<class", "<module", "<built-in", "subclasses", "injected", "system"):
        assert leak not in rendered


def test_inputs_are_not_mutated() -> None:
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(TemplateRenderError, match="unsafe"):
        render_chat_template("{{ messages.append(1) }}", messages)
    assert messages == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("payload", RUNAWAYS)
def test_runaway_templates_are_stopped_quickly(payload: str) -> None:
    started = time.perf_counter()
    with pytest.raises(TemplateRenderError):
        render_chat_template(payload, MESSAGES)
    assert time.perf_counter() - started < 10


def test_ordinary_loops_still_work() -> None:
    text = render_chat_template(
        "{% for i in range(3) %}{% for m in messages %}{{ loop.index }}/{{ loop.length }} {% endfor %}"
        "{% endfor %}{{ 'ab' * 3 }}{{ 2 ** 10 }}{{ 'x' + 'y' }}",
        MESSAGES * 2,
    )
    assert text == "1/2 2/2 1/2 2/2 1/2 2/2 ababab1024xy"


def test_budget_is_per_render() -> None:
    # Many renders of a busy (but bounded) template never accumulate into a refusal.
    template = "{% for i in range(50000) %}{% endfor %}ok"
    for _ in range(25):
        assert render_chat_template(template, MESSAGES) == "ok"


def test_caller_objects_reach_the_template_only_as_plain_data() -> None:
    class Sneaky(str):
        def evil(self) -> str:
            return "ran"

    text = render_chat_template(
        "{{ messages[0].content }}|{{ messages[0].content.evil is defined }}|{{ messages[0].extra }}",
        [{"role": "user", "content": Sneaky("hello"), "extra": object()}],
    )
    assert text == "hello|False|<object>"


@pytest.mark.parametrize(
    "payload",
    [
        "{% for i in range(99999) %}{% set x = 'x' * 30000000 %}{% endfor %}",
        "{% set s = 'x' * 1000000 %}{% set b %}{% for i in range(1000) %}{{ s }}{% endfor %}{% endset %}",
        "{% macro big() %}{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}{% endmacro %}"
        "{% for i in range(1000) %}{% set y = big() %}{% endfor %}",
    ],
)
def test_repeated_large_values_are_stopped(payload: str) -> None:
    started = time.perf_counter()
    with pytest.raises(TemplateRenderError, match="stopped"):
        render_chat_template(payload, MESSAGES)
    assert time.perf_counter() - started < 10

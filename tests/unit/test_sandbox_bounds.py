"""Format-width bombs in chat templates: every formatting route is bounded, ordinary formats work."""

from __future__ import annotations

import resource
import time

import pytest

from llmkit.chat.sandbox import MAX_FORMAT_WIDTH
from llmkit.chat.template import TemplateRenderError, render_chat_template

MESSAGES = [{"role": "user", "content": "hi"}]

# Each one, unbounded, builds a string of gigabytes in a single step (7.9 GB and 48 s measured).
BOMBS = [
    "{{ '%2000000000d' % 1 }}",
    "{{ '%-2000000000s' % 'x' }}",
    "{{ '%.2000000000f' % 1.0 }}",
    "{{ '%(a)2000000000s' % {'a': 1} }}",
    "{{ '%*d' % (2000000000, 1) }}",
    "{{ '%.*f' % (2000000000, 1.0) }}",
    "{{ '%2000000000d' | format(1) }}",
    "{{ '%(a)2000000000s' | format(a=1) }}",
    "{{ '{:2000000000}'.format(1) }}",
    "{{ '{:>2000000000}'.format('x') }}",
    "{{ '{:.2000000000f}'.format(1.0) }}",
    "{{ '{:{w}}'.format(1, w=2000000000) }}",
    "{{ '{0:>{1}}'.format('a', 2000000000) }}",
    "{{ '{x:^2000000000}'.format_map({'x': 1}) }}",
    "{{ ('%' ~ 2000000000 ~ 'd') % 1 }}",
    "{% set f = '{:' ~ '9' * 10 ~ '}' %}{{ f.format(1) }}",
]


@pytest.mark.parametrize("bomb", BOMBS)
def test_format_width_bombs_are_refused_at_once(bomb: str) -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(TemplateRenderError, match="width or precision") as caught:
        render_chat_template(bomb, MESSAGES)
    assert "limited to" in str(caught.value)
    assert time.perf_counter() - started < 2
    # No large string was built on the way to the refusal (ru_maxrss is in KiB).
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown < 100 * 1024


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ '%5d|%-3s|%.2f|%x' % (42, 'a', 3.14159, 255) }}", "   42|a  |3.14|ff"),
        ("{{ '%s and %s' | format('x', 'y') }}", "x and y"),
        ("{{ '%(n)03d' | format(n=7) }}", "007"),
        ("{{ '100%% sure, %s' % 'yes' }}", "100% sure, yes"),
        (
            "{{ '{:>6}|{:<3}|{:.1f}|{:,}'.format('ab', 'c', 2.25, 1234567) }}",
            "    ab|c  |2.2|1,234,567",
        ),
        ("{{ '{:{w}}|'.format('x', w=4) }}", "x   |"),
        ("{{ '{name}!'.format_map({'name': 'hi'}) }}", "hi!"),
        ("{{ '%*d' % (4, 7) }}", "   7"),
    ],
)
def test_ordinary_formats_render_as_in_python(template: str, expected: str) -> None:
    assert render_chat_template(template, MESSAGES) == expected


def test_the_bound_itself_is_allowed() -> None:
    text = render_chat_template(f"{{{{ '%{MAX_FORMAT_WIDTH}d' % 1 }}}}", MESSAGES)
    assert len(text) == MAX_FORMAT_WIDTH
    with pytest.raises(TemplateRenderError, match="width or precision"):
        render_chat_template(f"{{{{ '%{MAX_FORMAT_WIDTH + 1}d' % 1 }}}}", MESSAGES)


def test_format_inside_a_loop_is_still_charged_to_the_budget() -> None:
    # Widths under the bound, repeated, still meet the render's size budget.
    template = "{% for i in range(100000) %}{{ '%10000d' % i }}{% endfor %}"
    with pytest.raises(TemplateRenderError, match="stopped"):
        render_chat_template(template, MESSAGES)

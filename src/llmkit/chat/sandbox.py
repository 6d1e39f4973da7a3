"""The Jinja environment chat templates run in: Hugging Face's sandbox, plus limits on work and size.

Templates ship inside downloaded model files, so they are untrusted code. Jinja's immutable sandbox
already refuses Python internals (`__class__`, `__globals__`, ...) and mutation of the inputs; this
module adds what it lacks: a budget on loop iterations and calls per render (so nested loops cannot
spin for hours), caps on the size of strings and lists a template builds, and the same globals and
filters as transformers' `apply_chat_template`, so templates render byte for byte the same.
"""

from __future__ import annotations

import json
import math
import re
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from functools import wraps
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from markupsafe import EscapeFormatter, Markup

# Loop iterations plus calls in one render. A real template spends a few per message; a million
# takes about a second, so the bound only ever stops a template that is stuck or hostile.
MAX_WORK = 1_000_000
# Characters (or items) in any string, list or output a template produces. A million-token prompt
# is about 4 million characters, so real prompts stay far below this.
MAX_SIZE = 32 * 1024 * 1024
# Characters of all the strings a render builds along the way (each `+` copies its operands), so a
# loop cannot allocate a large value again and again.
MAX_PRODUCED = 8 * MAX_SIZE
# The widest field or longest precision a format may ask for ('%10d', '{:>10}', '%.3f'). Real
# templates pad a few characters at most; '%2000000000d' would build a 2 GB string in one step.
MAX_FORMAT_WIDTH = 10_000


class TemplateLimitError(SecurityError):
    """A template went over the work or size budget (a runaway loop, or an attempt at one)."""


class TemplateRaised(TemplateError):
    """The template called raise_exception(message) on purpose, e.g. for an unsupported role."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.template_message = message


class _Budget:
    __slots__ = ("produced", "work")

    def __init__(self) -> None:
        self.work = 0
        self.produced = 0


_budget: ContextVar[_Budget | None] = ContextVar("llmkit_template_budget", default=None)


@contextmanager
def render_budget() -> Iterator[None]:
    """A fresh work budget for one render (a context variable, so concurrent renders are separate)."""
    token = _budget.set(_Budget())
    try:
        yield
    finally:
        _budget.reset(token)


def _spend() -> None:
    budget = _budget.get()
    if budget is None:
        return
    budget.work += 1
    if budget.work > MAX_WORK:
        raise TemplateLimitError(
            f"The template did more than {MAX_WORK:,} loop iterations and calls; it was stopped."
        )


def _check_size(value: Any) -> None:
    if isinstance(value, (str, list, tuple, dict)) and len(value) > MAX_SIZE:
        raise TemplateLimitError(f"The template built a value of more than {MAX_SIZE:,} items.")


def _produced(value: Any) -> Any:
    """Check a value the template just built and charge its size to the render's budget."""
    _check_size(value)
    budget = _budget.get()
    if budget is not None and isinstance(value, (str, list, tuple, dict)):
        budget.produced += len(value)
        if budget.produced > MAX_PRODUCED:
            raise TemplateLimitError(
                f"The template built more than {MAX_PRODUCED:,} characters of text; it was stopped."
            )
    return value


def _bounded_concat(pieces: Iterable[str]) -> str:
    # Jinja joins captured output ({% set %} blocks, macro bodies) with the environment's concat.
    pieces = list(pieces)
    if sum(len(piece) for piece in pieces) > MAX_SIZE:
        raise TemplateLimitError(
            f"The template built a value of more than {MAX_SIZE:,} characters."
        )
    return _produced("".join(pieces))


# One printf-style conversion: %[(key)][flags][width][.precision][length]type.
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.S)


def _check_width(number: str | int, where: str) -> None:
    if int(number) > MAX_FORMAT_WIDTH:
        raise TemplateLimitError(
            f"The format {where} asks for a width or precision of {int(number):,}; "
            f"templates are limited to {MAX_FORMAT_WIDTH:,}."
        )


def _check_printf(format_string: str, values: Any) -> None:
    """Refuse '%2000000000d' % x (and '%*d' with a huge width value) before formatting."""
    star = False
    for width, precision, _ in _PRINTF_SPEC.findall(format_string):
        for number in (width, precision):
            if number == "*":
                star = True
            elif number:
                _check_width(number, repr(format_string[:40]))
    if star:
        items = values if isinstance(values, tuple) else (values,)
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool):
                _check_width(abs(item), repr(format_string[:40]))


def _check_format_spec(format_spec: str) -> None:
    """Refuse '{:>2000000000}' (nested specs arrive here already filled in)."""
    for number in re.findall(r"\d+", format_spec):
        _check_width(number, f"spec {format_spec[:40]!r}")


class _BoundedFormatter(SandboxedFormatter):
    """The sandbox's str.format, with every field's width and precision bounded."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_format_spec(format_spec)
        return super().format_field(value, format_spec)


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    pass


def _bounded_format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    # Jinja's |format is `value % args`; check the same way the % operator is checked.
    _check_printf(str(value), kwargs or args)
    return _produced(jinja2.filters.do_format(value, *args, **kwargs))


def _size_of(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, list, tuple)) else None


def _bounded_loop(iterable: Iterable[Any]) -> Iterator[Any]:
    # Wrapped around the iterable of every {% for %}: each iteration spends from the budget.
    for item in iterable:
        _spend()
        yield item


# transformers' helpers, reproduced so templates see the same functions (and errors).
def _raise_exception(message: str) -> None:
    raise TemplateRaised(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Unlike Jinja's built-in filter, transformers' tojson does not HTML-escape.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    # `dict` in a template builds dicts but exposes nothing of the dict type itself.
    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """namespace(): refuses underscore names (a way at Python internals) and oversized values."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Jinja's Namespace signature trick
        self, args = args[0], args[1:]
        attributes = dict(*args, **kwargs)
        for name, value in attributes.items():
            _TemplateNamespace._check(name, value)
        jinja2.utils.Namespace.__init__(self, attributes)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check(name, value)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any, value: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(
                "Chat templates cannot store underscore-prefixed attributes on a namespace, "
                f"but got {name!r}. Please rename the attribute."
            )
        _check_size(value)


class GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}`: marks assistant text for training masks.

    transformers uses the tag to find assistant tokens; rendering just outputs the body, in its own
    scope as there, so templates that use the tag render identically.
    """

    tags = {"generation"}  # noqa: RUF012 - Jinja's extension interface

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Callable[[], str]) -> str:
        return caller()


def _guard_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter that refuses huge numeric arguments (center(10**9), slice(10**9), ...)."""
    skip = 2 if getattr(function, "jinja_pass_arg", None) is not None else 1  # context?, value

    @wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[skip:], *kwargs.values()):
            if isinstance(value, int) and abs(value) > MAX_SIZE:
                raise TemplateLimitError(
                    f"A filter argument of {value} is beyond the template limits."
                )
        return _produced(function(*args, **kwargs))

    return guarded


class ChatTemplateEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with transformers' settings and llmkit's work and size limits."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    concat = staticmethod(_bounded_concat)

    def __init__(self) -> None:
        super().__init__(
            trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, loopcontrols]
        )
        for name, function in list(self.filters.items()):
            self.filters[name] = _guard_filter(function)
        self.filters["tojson"] = _tojson
        self.filters["format"] = _bounded_format_filter
        self.filters["_bounded_loop"] = _bounded_loop
        self.globals["raise_exception"] = _raise_exception
        self.globals["strftime_now"] = _strftime_now
        self.globals["dict"] = _TemplateDict()
        self.globals["namespace"] = _TemplateNamespace

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(
                loop.iter, "_bounded_loop", [], [], None, None, lineno=loop.lineno
            )
        return tree

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's sandboxed str.format / format_map, with the field widths bounded."""
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or (
            value.__name__ not in ("format", "format_map")
        ):
            return None
        text = value.__self__
        if not isinstance(text, str):
            return None
        formatter: _BoundedFormatter = (
            _BoundedEscapeFormatter(self, escape=text.escape)
            if isinstance(text, Markup)
            else _BoundedFormatter(self)
        )
        is_format_map = value.__name__ == "format_map"

        @wraps(value)
        def bounded(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return _produced(type(text)(formatter.vformat(text, (), args[0])))
            return _produced(type(text)(formatter.vformat(text, args, kwargs)))

        return bounded

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()
        # A macro that calls itself with its argument doubled grows exponentially; str.center(10**9)
        # and friends would allocate gigabytes.
        string_method = isinstance(getattr(__obj, "__self__", None), str)
        for value in (*args, *kwargs.values()):
            _check_size(value)
            if string_method and isinstance(value, int) and abs(value) > MAX_SIZE:
                raise TemplateLimitError(f"{value} is beyond the template limits.")
        return _produced(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        # Refuse before computing: 'x' * 10**10 or 9 ** 9 ** 9 would hang or exhaust memory.
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and right * math.log2(abs(left)) > 65_536:
                raise TemplateLimitError(f"{left} ** {right} is too large for a template.")
        elif operator == "*":
            for sequence, count in ((left, right), (right, left)):
                size = _size_of(sequence)
                if size is not None and isinstance(count, int) and size * count > MAX_SIZE:
                    raise TemplateLimitError(
                        f"Repeating a value {count:,} times is beyond the template limits."
                    )
        elif operator == "%" and isinstance(left, str):
            _check_printf(left, right)
        elif operator == "+":
            sizes = (_size_of(left), _size_of(right))
            if None not in sizes and sum(sizes) > MAX_SIZE:  # type: ignore[arg-type]
                raise TemplateLimitError("Joining these values is beyond the template limits.")
        return _produced(super().call_binop(context, operator, left, right))


def render_bounded(template: jinja2.Template, context: dict[str, Any]) -> str:
    """Render within a fresh budget, stopping once the output grows beyond MAX_SIZE."""
    pieces: list[str] = []
    size = 0
    with render_budget():
        for piece in template.generate(**context):
            size += len(piece)
            if size > MAX_SIZE:
                raise TemplateLimitError(
                    f"The template's output grew beyond {MAX_SIZE:,} characters; it was stopped."
                )
            pieces.append(piece)
    return "".join(pieces)

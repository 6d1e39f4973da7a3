"""A settings field that carries its command-line option: the flag, the help text and the bounds.

A settings dataclass (FinetuneConfig, ServerSettings) declares each setting once, with
`setting(default, help=..., minimum=...)`. The CLI derives its options from these fields
(`cli/options.py`: flag, type, default, help, range check), and the dataclass checks the same
bounds for callers of the Python API (`check_settings`), so a default, a help text or a range is
written in one place only. This module is a leaf: every layer may import it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmkit.errors import InvalidParameterError

OPTION = "llmkit.option"  # the key of a field's metadata that holds its Option


@dataclass(frozen=True)
class Option:
    """How one setting is offered on the command line, and which values it accepts."""

    help: str
    flags: tuple[str, ...] = ()  # default: --field-name (a bool: a plain on-switch)
    minimum: float | None = None  # the smallest value accepted
    above: float | None = None  # values must be greater than this
    maximum: float | None = None  # the largest value accepted
    below: float | None = None  # values must be smaller than this
    unit: str = ""  # named after the minimum: "at least 1 thread"
    choices: tuple[str, ...] = ()
    # Some values come from the user's environment (LLMKIT_API_KEY) rather than a flag.
    envvar: str | None = None

    def flag_of(self, name: str) -> str:
        """The flag a message names: the first declared, or --field-name."""
        flag = self.flags[0] if self.flags else f"--{name.replace('_', '-')}"
        return flag.split("/", 1)[0]

    @property
    def bounded(self) -> bool:
        bounds = (self.minimum, self.above, self.maximum, self.below)
        return any(bound is not None for bound in bounds) or bool(self.choices)

    def check(self, flag: str, value: Any) -> Any:
        """`value`, or one sentence naming the flag and the range it left (None always passes)."""
        if value is None or isinstance(value, bool):
            return value
        if self.choices:
            if value not in self.choices:
                raise InvalidParameterError(
                    f"{flag} must be one of {', '.join(self.choices)}, not {value!r}."
                )
            return value
        if not isinstance(value, int | float):
            return value
        if not self._within(value):
            raise InvalidParameterError(f"{flag} must be {self.describe_range()} (got {value}).")
        return value

    def _within(self, value: float) -> bool:
        # Written so that NaN fails every comparison; infinity passes no finite setting.
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return (
            (self.minimum is None or value >= self.minimum)
            and (self.above is None or value > self.above)
            and (self.maximum is None or value <= self.maximum)
            and (self.below is None or value < self.below)
        )

    def describe_range(self) -> str:
        """'at least 1 thread', 'above 0 and below 1', ...: the range in words."""
        parts = []
        if self.minimum is not None:
            parts.append(f"at least {_number(self.minimum)} {self.unit}".strip())
        if self.above is not None:
            parts.append(f"above {_number(self.above)}")
        if self.maximum is not None:
            parts.append(f"at most {_number(self.maximum)}")
        if self.below is not None:
            parts.append(f"below {_number(self.below)}")
        return " and ".join(parts) or "a number"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flags: Sequence[str] = (),
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    below: float | None = None,
    unit: str = "",
    choices: Sequence[str] = (),
    envvar: str | None = None,
) -> Any:
    """A dataclass field with its option; without a default, the option is required."""
    option = Option(
        help, tuple(flags), minimum, above, maximum, below, unit, tuple(choices), envvar
    )
    return dataclasses.field(default=default, metadata={OPTION: option})


def option_of(field: dataclasses.Field[Any]) -> Option | None:
    option = field.metadata.get(OPTION)
    return option if isinstance(option, Option) else None


def check_settings(settings: Any, *, exclusive: Sequence[tuple[str, str]] = ()) -> None:
    """Raise InvalidParameterError (one sentence) for the first value outside its declared range,
    then for the first pair of `exclusive` settings (field names) that are both given (not None):
    "Give either --tokens or --steps, not both.", each named by its declared flag."""
    options = {}
    for field in dataclasses.fields(settings):
        option = option_of(field)
        if option is not None:
            options[field.name] = option
            if option.bounded:
                option.check(option.flag_of(field.name), getattr(settings, field.name))
    for first, second in exclusive:
        if getattr(settings, first) is not None and getattr(settings, second) is not None:
            flags = options[first].flag_of(first), options[second].flag_of(second)
            raise InvalidParameterError(f"Give either {flags[0]} or {flags[1]}, not both.")

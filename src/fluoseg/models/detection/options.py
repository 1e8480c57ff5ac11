"""Validation of detector options given in a config: one-line errors naming the option."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fluoseg.errors import FluosegError


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def positive_number(model: str, name: str, value: Any) -> float:
    """``value`` as a float if it is a number > 0, else a :class:`FluosegError`."""
    if not _is_number(value) or not value > 0:
        raise FluosegError(f"{model} option {name!r} must be a positive number, got {value!r}")
    return float(value)


def fraction(model: str, name: str, value: Any) -> float:
    """``value`` as a float if it is a number in [0, 1], else a :class:`FluosegError`."""
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise FluosegError(f"{model} option {name!r} must be a number in [0, 1], got {value!r}")
    return float(value)


def numbers(model: str, name: str, value: Any, *, length: int | None = None, positive: bool = False
            ) -> tuple[float, ...]:
    """``value`` as a tuple of floats (a list in a config), of ``length`` items if given."""
    valid = (
        not isinstance(value, (str, bytes))
        and isinstance(value, Sequence)
        and len(value) > 0
        and (length is None or len(value) == length)
        and all(_is_number(v) and (not positive or v > 0) for v in value)
    )
    if not valid:
        what = f"{length} " if length is not None else ""
        sign = "positive " if positive else ""
        raise FluosegError(f"{model} option {name!r} must be a list of {what}{sign}numbers, got {value!r}")
    return tuple(float(v) for v in value)


def choice(model: str, name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a :class:`FluosegError` listing them."""
    if isinstance(value, bool) or value not in choices:
        raise FluosegError(f"{model} option {name!r} must be one of {list(choices)}, got {value!r}")
    return value


def flag(model: str, name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``, else a :class:`FluosegError`."""
    if not isinstance(value, bool):
        raise FluosegError(f"{model} option {name!r} must be true or false, got {value!r}")
    return value

"""Shared set-up of the fuzz tests: one hypothesis profile, the property, an example count.

Every fuzz test feeds generated input to a public entry point and checks one property:
the call returns, or raises a :class:`~fluoseg.errors.FluosegError` whose message is a
single non-empty line; any other exception is a bug. The profile bounds the number of
examples (200 per test, times ``FLUOSEG_FUZZ_SCALE``) so the whole set stays under a
minute on one thread; the total number of generated examples is printed at the end.

Test modules get the helpers through the ``fuzz`` fixture (the suite runs with
``--import-mode=importlib``, so they cannot import this file by name).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from fluoseg.errors import FluosegError

# FLUOSEG_FUZZ_SCALE=20 makes a deeper search (minutes) when hunting for new failures
SCALE = int(os.environ.get("FLUOSEG_FUZZ_SCALE", "1"))
settings.register_profile(
    "fluoseg-fuzz",
    max_examples=200 * SCALE,
    # the shared CPU makes single examples slow now and then; the count bounds the time
    deadline=None,
    # examples are not stored between runs: no .hypothesis folder in the work tree
    database=None,
    # the default run (CI) draws a fixed sample, so its result is reproducible; a scaled-up
    # run searches at random for new failures
    derandomize=SCALE == 1,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_COUNT = {"examples": 0, "calls": 0}


def example() -> None:
    """Count one generated example (call it first in every fuzz test body)."""
    _COUNT["examples"] += 1


def outcome(call: Callable[[], Any], *, path: str | Path | None = None) -> Any:
    """Run ``call``; return its result or the FluosegError it raised, after checking it.

    Parameters
    ----------
    call
        The entry point applied to one generated input.
    path
        When given, a FluosegError must name a file (this one or another the input names).
    """
    _COUNT["calls"] += 1
    try:
        return call()
    except FluosegError as error:
        text = str(error)
        assert text.strip(), "a FluosegError with an empty message"
        assert "\n" not in text and "\r" not in text, f"a multi-line message: {text!r}"
        if path is not None:
            assert error.path is not None, f"the message names no file: {text!r}"
        return error


def edit(document: Any, path: list[Any], operation: str, value: Any) -> Any:
    """Change a parsed YAML document in place at ``path`` (dict keys or list positions).

    ``operation`` is ``"set"`` (missing dict levels are created), ``"delete"`` or
    ``"wrap"`` (the value becomes a one-item list); a path that does not fit is ignored.
    Returns the document, for chaining.
    """
    node = document
    for key in path[:-1]:
        if isinstance(node, dict):
            if key not in node and operation != "set":
                return document
            node = node.setdefault(key, {})
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return document
    last = path[-1]
    if isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value if operation == "set" else [node[last]]
    elif isinstance(node, dict):
        if operation == "set":
            node[last] = value
        elif operation == "delete":
            node.pop(last, None)
        elif last in node:
            node[last] = [node[last]]
    return document


@pytest.fixture(scope="session")
def fuzz() -> SimpleNamespace:
    """The fuzz helpers: ``example`` (count one), ``outcome`` (check a call), ``edit``."""
    return SimpleNamespace(example=example, outcome=outcome, edit=edit)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _COUNT["examples"]:
        terminalreporter.write_line(
            f"fuzz: {_COUNT['examples']} generated examples run, {_COUNT['calls']} calls checked"
        )

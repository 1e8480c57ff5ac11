"""Argument helpers shared by every command: value types, option groups, errors and logging.

Every value is checked by argparse before a command loads data or a model, and a bad value
is one line on stderr with exit status 2 (:class:`Parser`), like every other user error.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from typing import NoReturn

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``fluoseg CMD: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _integer_at_least(low: int, what: str):
    """A parser of integers >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    parse.__doc__ = f"An integer >= {low}."
    return parse


positive_int = _integer_at_least(1, "a positive integer")
non_negative_int = _integer_at_least(0, "a number >= 0")


def _number_in(low: float, high: float, what: str, *, closed: bool = False):
    """A parser of finite numbers between ``low`` and ``high`` (the bounds themselves only if ``closed``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (low <= value <= high if closed else low < value < high) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__doc__ = f"{what[0].upper()}{what[1:]}."
    return parse


positive_float = _number_in(0.0, float("inf"), "a positive number")
probability = _number_in(0.0, 1.0, "a number between 0 and 1")
non_negative_float = _number_in(0.0, float("inf"), "a number >= 0", closed=True)
unit_interval = _number_in(0.0, 1.0, "a number from 0 to 1", closed=True)


def tile_size(text: str) -> int:
    """A network input tile size: an integer of at least 8 pixels."""
    value = positive_int(text)
    if value < 8:
        raise argparse.ArgumentTypeError(f"tile sizes start at 8 pixels, got {value}")
    return value


def names(text: str) -> list[str]:
    """A comma-separated list of names (``a,b,c``), at least one."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected comma-separated names such as a,b; got {text!r}")
    return items


def marker_choice(text: str) -> list[tuple[str, str]]:
    """``--markers``: ``a,b`` or, to feed a channel under the model's name for it, ``MODEL=FILE``
    (``DNA=DAPI``: the file's DAPI channel goes to the model's DNA slot). Returns (model, file) pairs."""
    pairs = []
    for item in names(text):
        model, _, file = item.partition("=")
        if not model.strip() or (_ and not file.strip()):
            raise argparse.ArgumentTypeError(f"--markers takes names or MODEL=FILE pairs such as DNA=DAPI; got {item!r}")
        pairs.append((model.strip(), (file or model).strip()))
    return pairs


def chosen_markers(pairs: list[tuple[str, str]] | None) -> list[str] | None:
    """The model's marker names of a :func:`marker_choice` (``None`` when none was given)."""
    return [model for model, _ in pairs] if pairs else None


def marker_aliases(pairs: list[tuple[str, str]] | None) -> dict[str, str]:
    """File channel name -> model marker name for the ``MODEL=FILE`` items of a :func:`marker_choice`."""
    return {file: model for model, file in pairs or () if file != model}


def integers(text: str) -> list[int]:
    """A comma-separated list of positive integers (``1,10,50``)."""
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,10,50; got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def tta(text: str) -> bool | list[int]:
    """``all`` (the 8 flips/rotations) or symmetry indices 0-7 such as ``0,4``."""
    if text == "all":
        return True
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tta takes 'all' or symmetry indices 0-7 such as 0,2,4; got {text!r}") from None
    if not values or any(not 0 <= v <= 7 for v in values):
        raise argparse.ArgumentTypeError(f"--tta symmetry indices must lie in 0-7, got {text!r}")
    return values


def diameter(text: str) -> float | str:
    """``--diameter``: pixels (``12``), micrometres (``6.5um``, kept as ``"6.5um"``), ``auto`` or ``off``."""
    if text in ("auto", "off"):
        return text
    number = text[:-2] if text.endswith("um") else text
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--diameter must be pixels (12), micrometres (6.5um), 'auto' or 'off', "
                                         f"got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--diameter must be a positive size, got {text}")
    return f"{value}um" if text.endswith("um") else value


def add_device(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs (auto: a CUDA GPU when present)")


def add_precision(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    from fluoseg.device import PRECISIONS

    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="arithmetic of the network: auto (default: bfloat16 where the device has it natively, "
                        "i.e. GPUs and CPUs with AMX or AVX-512 BF16, else float32), float32, or bfloat16 (slower "
                        "than float32 where emulated); the output layer and the decoding stay float32")


def add_threads(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--threads", type=positive_int, help="CPU threads for the network (default: torch's choice)")


def add_tiles(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "prediction") -> None:
    parser.add_argument("--tile-size", type=tile_size, help=f"network input tile size for {what} (default 572, "
                        "rounded to one the network accepts; valid-padding networks predict an image that a "
                        "smaller tile covers in that tile, with the same result)")
    parser.add_argument("--batch-size", type=positive_int, default=1, help="tiles per forward pass (default 1)")


def add_verbosity(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", "-v", action="count", default=0,
                        help="log what happens (-v: steps, -vv: details) on stderr")


def add_overwrite(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "existing outputs") -> None:
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what}")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (it may be replaced meanwhile)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings (a stale lock taken over, objects touching a block's halo) as one line each."""
    print(f"fluoseg: warning: {message}", file=sys.stderr if file is None else file)


def configure_logging(verbose: int) -> None:
    """Send fluoseg's log records to stderr: warnings by default, more with ``-v``/``-vv``."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    package = logging.getLogger("fluoseg")
    package.setLevel(level)
    handler = next((h for h in package.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("fluoseg: %(message)s"))
        package.addHandler(handler)
    handler.setLevel(level)  # a run's train.log may lower the logger's level; stderr keeps this one
    warnings.showwarning = _show_warning

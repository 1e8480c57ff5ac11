"""Command-line interface: ``fluoseg train | predict | evaluate | quantify | synth | demo | crossval | experiment``.

One module per command family, each with ``add_parser(subparsers)``; shared argument types
and option groups live in :mod:`._args`. The CLI only wires parts together: every user
mistake surfaces as a :class:`~fluoseg.errors.FluosegError`, printed as one line, with exit
status 2; bad option values are refused the same way before anything is loaded.
"""

from fluoseg.cli.main import build_parser, main

__all__ = ["build_parser", "main"]

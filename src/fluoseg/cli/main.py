"""The ``fluoseg`` entry point: the parser of every command, and error handling."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import fluoseg.cli._args as _args
import fluoseg.cli.crossval as crossval_command
import fluoseg.cli.demo as demo_command
import fluoseg.cli.evaluate as evaluate_command
import fluoseg.cli.experiment as experiment_command
import fluoseg.cli.export as export_command
import fluoseg.cli.models as models_command
import fluoseg.cli.points as points_command
import fluoseg.cli.predict as predict_command
import fluoseg.cli.quantify as quantify_command
import fluoseg.cli.synth as synth_command
import fluoseg.cli.train as train_command
import fluoseg.cli.tune as tune_command
from fluoseg.errors import FluosegError

COMMANDS = (train_command, predict_command, evaluate_command, synth_command, demo_command, crossval_command,
            experiment_command, models_command, export_command, tune_command, points_command,
            quantify_command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from fluoseg import __version__

    parser = _args.Parser(prog="fluoseg",
                          description="Segment multi-channel fluorescence images with any subset of markers.")
    parser.add_argument("--version", action="version", version=f"fluoseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_args.Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status.

    This is the one place where failures of the machine (an ``OSError`` anywhere, or
    torch's short-write ``RuntimeError`` on a full disk) become one-line errors with exit
    status 2, like every user mistake; other exceptions are bugs and keep their traceback.
    """
    from fluoseg.io import describe_os_error, is_torch_write_failure

    args = build_parser().parse_args(argv)
    _args.configure_logging(getattr(args, "verbose", 0))
    try:
        return args.func(args)
    except FluosegError as error:
        return _fail(error)
    except OSError as error:
        return _fail(describe_os_error(error))
    except RuntimeError as error:
        if not is_torch_write_failure(error):
            raise
        return _fail(describe_os_error(error))
    except KeyboardInterrupt:
        print("fluoseg: interrupted", file=sys.stderr)
        return _args.EXIT_INTERRUPTED


def _fail(error: FluosegError) -> int:
    print(f"fluoseg: error: {error}", file=sys.stderr)
    return _args.EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())

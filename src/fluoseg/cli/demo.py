"""``fluoseg demo``: train, predict and evaluate on built-in simulated data."""

from __future__ import annotations

import argparse
from pathlib import Path

import fluoseg.cli._args as _args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, predict and evaluate on built-in simulated data")
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--epochs", type=_args.positive_int, default=None,
                   help="training epochs (default: a few minutes' worth)")
    _args.add_overwrite(p, "an existing demo folder")
    _args.add_device(p)
    _args.add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fluoseg.demo import run_demo
    from fluoseg.io import prepare_output_dir

    prepare_output_dir(args.out, overwrite=args.overwrite, what="demo folder")
    run_demo(Path(args.out), overwrite=args.overwrite, epochs=args.epochs, device=args.device, progress=not args.quiet)
    return 0

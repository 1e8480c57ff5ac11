"""``fluoseg export``: a trained run (or a zoo model) as a bioimage.io model package."""

from __future__ import annotations

import argparse

import fluoseg.cli._args as _args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a trained run as a bioimage.io model package",
                       description="Write a bioimage.io model package (spec 0.5 zip) for Fiji/deepImageJ, ilastik, "
                       "QuPath, BiaPy and napari: TorchScript and state-dict weights, the markers as input "
                       "channels with their availability vector as a second input, test tensors from a real "
                       "sample, a model card and a cover. 'fluoseg predict PACKAGE' runs it with fluoseg's "
                       "decoding. Needs: pip install 'fluoseg[bioimageio]'.")
    p.add_argument("model", metavar="RUN_OR_MODEL_NAME", help="run directory written by 'fluoseg train', or a "
                   "model name of the zoo")
    p.add_argument("--out", required=True, help="package to write (NAME.zip)")
    p.add_argument("--sample", help="image the test tensors and cover are cut from (default: the first test "
                   "sample of the run's split)")
    p.add_argument("--sample-channels", type=_args.names, help="comma-separated marker name of every channel of "
                   "--sample, when the file does not name them")
    p.add_argument("--name", help="model name shown on bioimage.io (letters, digits, spaces, _ + - ( ))")
    p.add_argument("--author", action="append", dest="authors", help="author name (repeat for several)")
    p.add_argument("--license", default="CC-BY-4.0", help="SPDX licence id of the weights (default CC-BY-4.0)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint to export")
    p.add_argument("--test-size", type=_args.positive_int, default=256,
                   help="largest side of the test tensors in pixels (default 256)")
    p.add_argument("--no-test", action="store_true", help="skip running bioimage.io's own test on the package")
    _args.add_overwrite(p, "an existing package")
    _args.add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fluoseg.bioimage.export import export_package, test_package

    written = export_package(args.model, args.out, sample=args.sample, channel_names=args.sample_channels,
                             name=args.name, authors=tuple(args.authors or ("fluoseg",)), license=args.license,
                             checkpoint=args.checkpoint, test_size=args.test_size, overwrite=args.overwrite)
    print(f"wrote {written}")
    if args.no_test:
        return 0
    failures = test_package(written)
    for failure in failures:
        print(f"bioimageio test: {failure}")
    print("bioimageio test: " + ("failed" if failures else "passed"))
    return 1 if failures else 0

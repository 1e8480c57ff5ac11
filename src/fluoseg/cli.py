"""Command-line interface: ``fluoseg train | predict | evaluate | demo``.

The CLI only wires parts together. Every user mistake surfaces as a
:class:`~fluoseg.errors.FluosegError`, printed as one line, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fluoseg.errors import FluosegError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _tta(text: str | None) -> bool | list[int]:
    """``--tta`` alone: all 8 symmetries; ``--tta 0,4``: those symmetries."""
    if text is None:
        return False
    if text == "all":
        return True
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise FluosegError(f"--tta takes 'all' or symmetry indices 0-7 such as 0,2,4; got {text!r}") from None


def _diameter(text: str | None) -> float | str | None:
    """``--diameter``: pixels (``12``), micrometres (``6.5um``, converted per image) or ``auto``."""
    if text is None or text == "auto":
        return text
    number = text[:-2] if text.endswith("um") else text
    try:
        value = float(number)
    except ValueError:
        raise FluosegError(f"--diameter must be pixels (12), micrometres (6.5um) or 'auto', got {text!r}") from None
    if value <= 0:
        raise FluosegError(f"--diameter must be positive, got {text}")
    return f"{value}um" if text.endswith("um") else value


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where the network runs")


def cmd_train(args: argparse.Namespace) -> int:
    from fluoseg.config import load_config
    from fluoseg.train.trainer import train

    config = load_config(args.config)
    if args.device != "auto":
        config.train.device = args.device
    if args.epochs is not None:
        config.train.epochs = args.epochs
    run_dir = train(config, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    print(f"trained: {run_dir}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from fluoseg.device import set_threads
    from fluoseg.infer import Segmenter
    from fluoseg.io import read_image
    from fluoseg.predict import check_writable, output_paths, predict_file

    images = [Path(p) for p in args.images]
    out_dir = Path(args.out)
    paths = output_paths(images, out_dir, fmt=args.format, probabilities=args.probabilities)
    check_writable(paths, overwrite=args.overwrite)
    for image in images:  # fail on an unreadable input before the model is loaded
        read_image(image, axes=args.axes, lazy=True)
    set_threads(args.threads)
    segmenter = Segmenter.load(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    markers = segmenter.panel.parse(args.markers) if args.markers else None
    out_dir.mkdir(parents=True, exist_ok=True)
    for image, target in tqdm(list(zip(images, paths)), desc="predict", unit="image", disable=args.quiet):
        written = predict_file(segmenter, image, target, channel_names=_names(args.channel_names), markers=markers,
                               axes=args.axes, tile_size=args.tile_size, batch_size=args.batch_size,
                               tta=_tta(args.tta), diameter=_diameter(args.diameter), overwrite=args.overwrite,
                               progress=not args.quiet)
        print(f"{image} -> {written}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fluoseg.evaluate import evaluate_instance, evaluate_semantic, instance_summary, summary_table, write_rows

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FluosegError("output exists; pass --overwrite to replace it", path=out)
    if args.task == "instance":
        rows = evaluate_instance(args.pred, args.truth)
        write_rows(rows, out, overwrite=args.overwrite)
        print(instance_summary(rows))
    else:
        rows = evaluate_semantic(args.pred, args.truth, classes=_names(args.classes))
        write_rows(rows, out, overwrite=args.overwrite)
        print(summary_table(rows))
    print(f"metrics: {out}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from fluoseg.synthesize import synthesize_nuclei

    manifest = synthesize_nuclei(args.data, args.out, sample_ids=_names(args.samples), n_images=args.n_images,
                                 grid=args.grid, max_offset=args.max_offset, overlap_mode=args.overlap,
                                 shape=args.size, seed=args.seed, overwrite=args.overwrite)
    print(f"artificial images: {manifest.parent} (add {manifest} to data.extra_train)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fluoseg.demo import run_demo

    run_demo(Path(args.out), overwrite=args.overwrite, epochs=args.epochs, device=args.device, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="fluoseg", description="Segment multi-channel fluorescence images with any subset of markers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", help="run configuration (YAML)")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="segment images with a trained run")
    p.add_argument("run_dir", help="run directory written by 'fluoseg train'")
    p.add_argument("images", nargs="+", help="image files (TIFF, OME-TIFF, PNG, NPY, Zarr, HDF5)")
    p.add_argument("--out", required=True, help="output folder")
    io_group = p.add_argument_group("input channels")
    io_group.add_argument("--markers", help="comma-separated markers to use (a subset of the trained ones); "
                          "names the channels of files without channel names")
    io_group.add_argument("--channel-names", help="comma-separated marker name of every channel, in file order")
    io_group.add_argument("--axes", help="axis order of the files, e.g. CYX, YXC, CZYX (default: from metadata)")
    out_group = p.add_argument_group("output")
    out_group.add_argument("--format", choices=("tif", "zarr"), default="tif", help="output format (zarr streams large images)")
    out_group.add_argument("--probabilities", action="store_true", help="also write class probabilities")
    out_group.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    out_group.add_argument("--diameter", help="instance models trained with scale normalisation: mean object "
                           "diameter in these images, in pixels (12) or micrometres (6.5um, needs the pixel size "
                           "in the file), or 'auto' to estimate it from a first pass")
    run_group = p.add_argument_group("execution")
    run_group.add_argument("--tile-size", type=int, help="network input tile size (default 572)")
    run_group.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass")
    run_group.add_argument("--tta", nargs="?", const="all", default=None,
                           help="test-time augmentation: average over all 8 flips/rotations, or over the listed "
                           "symmetry indices (e.g. --tta 0,4)")
    run_group.add_argument("--checkpoint", choices=("best", "last"), default="best")
    run_group.add_argument("--threads", type=int, help="CPU threads for the network (default: torch's choice)")
    run_group.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device(run_group)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="score predicted masks against ground truth")
    p.add_argument("--pred", required=True, help="folder of predicted masks")
    p.add_argument("--truth", required=True, help="folder of ground-truth masks with the same file names")
    p.add_argument("--out", required=True, help="CSV file to write (semantic: image,class,metric,value; "
                   "instance: image,metric,threshold,value)")
    p.add_argument("--task", choices=("semantic", "instance"), default="semantic",
                   help="masks per class, or instance label images")
    p.add_argument("--classes", help="comma-separated class names of the mask channels")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("synth", help="generate artificial training images")
    synth = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    q = synth.add_parser("nuclei", help="Kromp et al.'s artificial nuclei images from annotated samples")
    q.add_argument("--data", required=True, help="manifest of annotated source samples (with labels)")
    q.add_argument("--out", required=True, help="output folder (images/, labels/, manifest.yaml)")
    q.add_argument("--samples", help="comma-separated source sample ids (use training samples only)")
    q.add_argument("--n-images", type=int, default=100)
    q.add_argument("--grid", type=int, default=5, help="nuclei are placed on a GRID x GRID lattice")
    q.add_argument("--max-offset", type=int, help="largest random shift from a grid node (controls overlap)")
    q.add_argument("--overlap", choices=("random", "replace", "add"), default="random")
    q.add_argument("--size", type=int, default=256, help="side of the square images")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=cmd_synth)

    p = sub.add_parser("demo", help="train, predict and evaluate on built-in simulated data")
    p.add_argument("--out", default="demo_out", help="output folder")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: a few minutes' worth)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device(p)
    p.set_defaults(func=cmd_demo)

    from fluoseg.experiments.cli import add_experiment_parser  # its commands load their modules lazily

    add_experiment_parser(sub)
    from fluoseg.crossval import add_crossval_parser

    add_crossval_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FluosegError as error:
        print(f"fluoseg: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("fluoseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

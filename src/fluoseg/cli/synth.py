"""``fluoseg synth``: artificial training images."""

from __future__ import annotations

import argparse

import fluoseg.cli._args as _args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate artificial training images")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND", parser_class=_args.Parser)
    q = kinds.add_parser("nuclei", help="Kromp et al.'s artificial nuclei images from annotated samples")
    q.add_argument("--data", required=True, help="manifest of annotated source samples (with labels)")
    q.add_argument("--out", required=True, help="output folder (images/, labels/, manifest.yaml)")
    q.add_argument("--samples", type=_args.names, help="comma-separated source sample ids (use training samples only)")
    q.add_argument("--n-images", type=_args.positive_int, default=100, help="number of images (default 100)")
    q.add_argument("--grid", type=_args.positive_int, default=5, help="nuclei are placed on a GRID x GRID lattice")
    q.add_argument("--max-offset", type=int, help="largest random shift from a grid node (controls overlap)")
    q.add_argument("--overlap", choices=("random", "replace", "add"), default="random",
                   help="how overlapping nuclei combine (default: a random choice per image)")
    q.add_argument("--size", type=_args.positive_int, default=256, help="side of the square images (default 256)")
    q.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _args.add_overwrite(q, "an existing output folder")
    q.set_defaults(func=run_nuclei)


def run_nuclei(args: argparse.Namespace) -> int:
    from fluoseg.io import prepare_output_dir
    from fluoseg.synthesize import synthesize_nuclei

    prepare_output_dir(args.out, overwrite=args.overwrite, what="output folder")
    manifest = synthesize_nuclei(args.data, args.out, sample_ids=args.samples, n_images=args.n_images,
                                 grid=args.grid, max_offset=args.max_offset, overlap_mode=args.overlap,
                                 shape=args.size, seed=args.seed, overwrite=args.overwrite)
    print(f"artificial images: {manifest.parent} (add {manifest} to data.extra_train)")
    return 0

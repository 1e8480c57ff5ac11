"""``fluoseg synth``: artificial training images."""

from __future__ import annotations

import argparse

import fluoseg.cli._args as _args


CELL_PRESETS = ("default", "shifted")
CELL_MARKER_NAMES = ("DAPI", "ECAD", "CK", "CD45", "KI67")
DEFAULT_CELL_MARKERS = ("DAPI", "ECAD", "CK", "CD45")
"""The simulator's presets and markers (:mod:`fluoseg.data.synth.cell_domain`; not imported here so
that ``--help`` stays fast; a test checks they agree)."""


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

    c = kinds.add_parser("cells", help="simulated multiplexed cell images with cell and nucleus instance labels",
                         description="Draw tissue of touching cells stained by a nuclear (DAPI), membrane (ECAD) and "
                         "cytoplasm (CK) marker plus a distractor (CD45) and optionally KI67, with exact instance "
                         "labels. Writes OUT/images/*.ome.tif, OUT/labels (cells), OUT/nuclei, OUT/manifest.yaml and "
                         "OUT/simulation.yaml (provenance); other files in OUT are left alone.")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--n-images", type=_args.positive_int, default=50, help="number of images (default 50)")
    c.add_argument("--settings", default="default",
                   help=f"simulator preset ({', '.join(CELL_PRESETS)}; shifted has other staining strengths, noise "
                   "and cell sizes) or a YAML file of settings on a 'base' preset (default: default)")
    c.add_argument("--markers", type=_args.names, default=list(DEFAULT_CELL_MARKERS),
                   help=f"comma-separated channels to write, in this order, from {','.join(CELL_MARKER_NAMES)} "
                   f"(default {','.join(DEFAULT_CELL_MARKERS)})")
    c.add_argument("--target", choices=("cells", "nuclei"), default="cells",
                   help="which labels the manifest names: whole cells (default) or nuclei (both are written)")
    c.add_argument("--size", type=_args.positive_int, default=256, help="side of the square images (default 256)")
    c.add_argument("--prefix", default="cells", help="file name stem of the sample ids (default cells)")
    c.add_argument("--seed", type=int, default=0, help="random seed; image i is the same for any --n-images "
                   "(default 0)")
    _args.add_overwrite(c, "a dataset this command wrote before in OUT")
    c.set_defaults(func=run_cells)

    z = kinds.add_parser("nuclei3d", help="simulated 3D nuclei z-stacks with instance labels",
                         description="Draw z-stacks of ellipsoid nuclei (random size, orientation, brightness and "
                         "chromatin texture; an axially elongated point spread function; camera noise), sampled "
                         "more coarsely along z than in-plane as confocal stacks are. Writes OUT/images/*.ome.tif "
                         "(channel DNA, pixel size in the metadata), OUT/labels, OUT/manifest.yaml and "
                         "OUT/simulation.yaml; other files in OUT are left alone.")
    z.add_argument("--out", required=True, help="output folder")
    z.add_argument("--n-stacks", type=_args.positive_int, default=10, help="number of stacks (default 10)")
    z.add_argument("--shape", type=_stack_shape, default=(16, 96, 96),
                   help="Z,Y,X size of each stack in voxels (default 16,96,96)")
    z.add_argument("--z-step", type=_args.positive_float, default=2.0,
                   help="slice spacing in in-plane pixels (anisotropy; 1 = cubic voxels; default 2)")
    z.add_argument("--pixel-size", type=_args.positive_float, default=0.5,
                   help="in-plane pixel size in µm (the z size is z-step times it; default 0.5)")
    z.add_argument("--seed", type=int, default=0, help="random seed; stack i is the same for any --n-stacks "
                   "(default 0)")
    _args.add_overwrite(z, "a dataset this command wrote before in OUT")
    z.set_defaults(func=run_nuclei3d)


def _stack_shape(text: str) -> tuple[int, int, int]:
    """Z,Y,X sizes: three positive integers."""
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected Z,Y,X (three sizes), got {text!r}")
    return tuple(_args.positive_int(part.strip()) for part in parts)  # type: ignore[return-value]


def run_nuclei(args: argparse.Namespace) -> int:
    from fluoseg.io import prepare_output_dir
    from fluoseg.synthesize import synthesize_nuclei

    prepare_output_dir(args.out, overwrite=args.overwrite, what="output folder")
    manifest = synthesize_nuclei(args.data, args.out, sample_ids=args.samples, n_images=args.n_images,
                                 grid=args.grid, max_offset=args.max_offset, overlap_mode=args.overlap,
                                 shape=args.size, seed=args.seed, overwrite=args.overwrite)
    print(f"artificial images: {manifest.parent} (add {manifest} to data.extra_train)")
    return 0


def run_cells(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fluoseg.config import read_yaml
    from fluoseg.data.synth import cell_domain, write_cells_dataset
    from fluoseg.io import prepare_output_dir

    settings = args.settings
    if settings.endswith((".yaml", ".yml")) or Path(settings).is_file():
        domain = cell_domain(read_yaml(settings), source=settings)
    else:
        domain = cell_domain(settings)
    out = prepare_output_dir(args.out, overwrite=True, what="output folder")  # kind and permissions; files stay
    manifest = write_cells_dataset(out, args.n_images, domain, args.seed, shape=(args.size, args.size),
                                   markers=args.markers, target=args.target, prefix=args.prefix,
                                   overwrite=args.overwrite)
    print(f"simulated cells: {manifest} ({args.n_images} images, markers {','.join(args.markers)}, "
          f"labels: {args.target})")
    return 0


def run_nuclei3d(args: argparse.Namespace) -> int:
    from fluoseg.data.synth.nuclei3d_dataset import write_nuclei3d_dataset
    from fluoseg.io import prepare_output_dir

    out = prepare_output_dir(args.out, overwrite=True, what="output folder")  # kind and permissions; files stay
    manifest = write_nuclei3d_dataset(out, args.n_stacks, shape=args.shape, z_step=args.z_step,
                                      pixel_size_yx=args.pixel_size, seed=args.seed, overwrite=args.overwrite)
    print(f"simulated nuclei stacks: {manifest} ({args.n_stacks} stacks of {'x'.join(map(str, args.shape))} voxels)")
    return 0

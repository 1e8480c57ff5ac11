"""``fluoseg predict``: segment image files (or folders of them) with a trained run."""

from __future__ import annotations

import argparse
import fluoseg.cli._args as _args

FORMATS = ("tif", "zarr", "ome-tiff", "geojson", "roi")
"""The keys of :data:`fluoseg.predict.OUTPUT_FORMATS` (not imported here: ``--help`` stays fast)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment images with a trained run or a bioimage.io package",
                       description="Segment images of any size with any subset of the trained markers. Each input "
                       "NAME gives OUT/NAME.tif (masks, labels or predicted channels); existing outputs are kept "
                       "unless --overwrite is given. A bioimage.io package made by 'fluoseg export' predicts as "
                       "its run; other single-input packages run through bioimageio.core as semantic models.")
    p.add_argument("run_dir", metavar="MODEL", help="run directory written by 'fluoseg train', bioimage.io package "
                   "(.zip), or pretrained model name ('fluoseg models')")
    p.add_argument("images", nargs="+", help="image files or folders of them (TIFF, OME-TIFF, PNG, NPY, Zarr, HDF5)")
    p.add_argument("--out", required=True, help="output folder")
    inputs = p.add_argument_group("input channels")
    inputs.add_argument("--markers", type=_args.marker_choice,
                        help="comma-separated markers to use (a subset of the trained ones; the file's other channels "
                        "are left out); MODEL=FILE feeds a channel under the model's name for it (e.g. DNA=DAPI for "
                        "the pretrained nuclei model); names the channels of files without channel names")
    inputs.add_argument("--channel-names", type=_args.names,
                        help="comma-separated marker name of every channel, in file order")
    inputs.add_argument("--axes", help="axis order of the files, e.g. CYX, YXC, CZYX (default: from metadata)")
    outputs = p.add_argument_group("output")
    outputs.add_argument("--format", choices=FORMATS, default="tif",
                         help="output format: tif, zarr (streams large images), ome-tiff (tiled, with pyramid "
                         "levels for large images), geojson (QuPath objects), roi (Fiji ROI set)")
    outputs.add_argument("--probabilities", action="store_true", help="also write class probabilities")
    outputs.add_argument("--objects", action="store_true", help="instance models: also write NAME_objects.csv "
                         "(area, centroid, bounding box, eccentricity, mean/sum intensity of every channel per object; "
                         "detection models add each object's score)")
    _args.add_overwrite(outputs)
    outputs.add_argument("--diameter", type=_args.diameter, default="auto",
                         help="instance models trained with scale normalisation: mean object diameter in these "
                         "images, in pixels (12) or micrometres (6.5um, needs the pixel size in the file); 'auto' "
                         "(default) estimates it from a first pass, 'off' predicts at the original scale")
    decoding = p.add_argument_group("instance decoding (default: the values 'fluoseg tune' stored, else those trained with)")
    decoding.add_argument("--h", type=_args.positive_float, help="distance method: height of the h-maxima seeding objects")
    decoding.add_argument("--threshold", type=_args.probability, help="foreground probability threshold")
    decoding.add_argument("--min-size", type=int, help="smallest object kept, in pixels at the model's scale")
    decoding.add_argument("--min-score", type=_args.probability,
                          help="detection models: lowest detection score kept (e.g. 0.05 to rank every detection "
                          "for COCO AP with --objects)")
    execution = p.add_argument_group("execution")
    _args.add_tiles(execution)
    execution.add_argument("--tta", nargs="?", const="all", default=None, type=_args.tta,
                           help="test-time augmentation: average over all 8 flips/rotations, or over the listed "
                           "symmetry indices (e.g. --tta 0,4)")
    execution.add_argument("--checkpoint", choices=("best", "last"), default="best",
                           help="which checkpoint of the run to use (default best)")
    _args.add_threads(execution)
    _args.add_device(execution)
    _args.add_verbosity(execution)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from fluoseg.bioimage.foreign import load_model
    from fluoseg.device import set_threads
    from fluoseg.errors import FluosegError
    from fluoseg.infer import PredictOptions
    from fluoseg.io import OutputLock, prepare_output_dir, read_image
    from fluoseg.predict import check_inputs, check_writable, expand_inputs, output_paths, predict_file

    images = expand_inputs(args.images)
    out_dir = prepare_output_dir(args.out, overwrite=True, what="output folder")  # other files may stay there
    paths = output_paths(images, out_dir, fmt=args.format, probabilities=args.probabilities, objects=args.objects)
    check_writable(paths, overwrite=args.overwrite)
    for image in images:  # fail on an unreadable input before the model is loaded
        read_image(image, axes=args.axes, lazy=True)
    set_threads(args.threads)
    segmenter = load_model(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    overrides = {k: v for k, v in (("h", args.h), ("threshold", args.threshold), ("min_size", args.min_size),
                                   ("min_score", args.min_score)) if v is not None}
    if overrides:
        segmenter.set_decoding(**overrides)
    if args.objects and segmenter.task_name != "instance":
        raise FluosegError(f"--objects measures instance labels, but this model's task is {segmenter.task_name}; "
                           "leave --objects out")
    diameter_um = float(args.diameter[:-2]) if isinstance(args.diameter, str) and args.diameter.endswith("um") else None
    aliases = {file: model for model, file in args.markers or () if file != model}
    options = PredictOptions(
        markers=segmenter.panel.parse([model for model, _ in args.markers]) if args.markers else None,
        tile_size=args.tile_size,
        batch_size=args.batch_size, tta=args.tta or False, progress=not args.quiet,
        diameter=None if diameter_um is not None else args.diameter)
    check_inputs(segmenter, images, options, channel_names=args.channel_names, axes=args.axes, aliases=aliases)
    with OutputLock(out_dir, what="output folder"):
        out_dir.mkdir(parents=True, exist_ok=True)
        for image, target in tqdm(list(zip(images, paths)), desc="predict", unit="image", disable=args.quiet):
            written = predict_file(segmenter, image, target, options, channel_names=args.channel_names,
                                   axes=args.axes, diameter_um=diameter_um, overwrite=args.overwrite, aliases=aliases)
            print(f"{image} -> {written}")
    return 0

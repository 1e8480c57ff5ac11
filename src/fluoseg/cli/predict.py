"""``fluoseg predict``: segment image files (or folders of them) with a trained run."""

from __future__ import annotations

import argparse
import fluoseg.cli._args as _args
from fluoseg.data.blank import BLANK_SNR

FORMATS = ("tif", "zarr", "ome-tiff", "geojson", "roi", "ngff")
"""The keys of :data:`fluoseg.predict.OUTPUT_FORMATS` (not imported here: ``--help`` stays fast)."""
UNCERTAINTY_METHODS = ("tta", "dropout")
UNCERTAINTY_MEASURES = ("variance", "entropy", "mutual-information")
""":data:`fluoseg.uncertainty.METHODS` and ``MEASURES`` (a test checks they agree)."""


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
                        help="comma-separated markers to use (a subset of the trained ones; a channel-invariant model "
                        "also takes markers it never saw; the file's other channels are left out); MODEL=FILE feeds "
                        "a channel under the model's name for it (e.g. DNA=DAPI for "
                        "the pretrained nuclei model); names the channels of files without channel names")
    inputs.add_argument("--channel-names", type=_args.names,
                        help="comma-separated marker name of every channel, in file order")
    inputs.add_argument("--axes", help="axis order of the files, e.g. CYX, YXC, CZYX (default: from metadata)")
    outputs = p.add_argument_group("output")
    outputs.add_argument("--format", choices=FORMATS, default="tif",
                         help="output format: tif, zarr (streams large images), ome-tiff (tiled, with pyramid "
                         "levels for large images), geojson (QuPath objects), roi (Fiji ROI set), ngff (NAME.ome.zarr: the image as a "
                         "multiscale OME-Zarr with the masks or labels as its label images, for napari, QuPath, MoBIE)")
    outputs.add_argument("--probabilities", action="store_true", help="also write class probabilities")
    outputs.add_argument("--objects", action="store_true", help="instance models: also write NAME_objects.csv "
                         "(area, centroid, bounding box, eccentricity, mean/sum intensity of every channel per object; "
                         "detection models add each object's score)")
    outputs.add_argument("--uncertainty", nargs="?", const="tta", choices=UNCERTAINTY_METHODS,
                         help="also write NAME_uncertainty.tif, a float32 per-pixel uncertainty map, and the mean per "
                         "image in OUT/uncertainty.csv, from repeated predictions: tta (default: the 8 flips/rotations, "
                         "or those of --tta) or dropout (Monte-Carlo dropout; the model needs dropout layers)")
    outputs.add_argument("--uncertainty-measure", choices=UNCERTAINTY_MEASURES, default="variance",
                         help="per-pixel summary of the repeated predictions: variance (default; 0 where they agree), "
                         "entropy (predictive entropy of their mean, nats) or mutual-information (the part of the "
                         "entropy due to disagreement)")
    outputs.add_argument("--uncertainty-passes", type=_args.positive_int, default=8, metavar="N",
                         help="--uncertainty dropout: number of passes (at least 2; default 8)")
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
    decoding.add_argument("--stitch-threshold", type=_args.unit_interval, default=0.25,
                          help="z-stacks: objects of consecutive slices overlapping with at least this IoU become one "
                          "3D object (Cellpose's stitch_threshold; default 0.25; 0 keeps one object per slice)")
    decoding.add_argument("--blank-snr", type=_args.non_negative_float, default=BLANK_SNR,
                          help="an image whose brightest spot is less than this many noise standard deviations above "
                          f"its background is an empty field and gets no objects (default {BLANK_SNR:g}; pure noise "
                          "scores about 6-7; 0 turns the check off)")
    large = p.add_argument_group("large images (instance models)",
                                 "Labels of Zarr outputs and of images over 4096x4096 pixels are decoded block by "
                                 "block in bounded memory; a work folder NAME.work beside the output records the "
                                 "finished blocks until the output is complete.")
    large.add_argument("--block-size", type=_block_size, default=1024,
                       help="side of the blocks decoded one at a time, in pixels (default 1024; also the chunk "
                       "side of Zarr label outputs)")
    large.add_argument("--block-depth", type=_args.positive_int, default=4, metavar="PLANES",
                       help="z-stacks whose slices are stitched (--stitch-threshold > 0): planes per block (default "
                       "4); objects are linked across blocks in z as in y and x")
    large.add_argument("--halo", type=_args.non_negative_int, help="context decoded around each block, in "
                       "pixels: at least the largest object's extent (default: twice the model's object diameter, at least 64, plus the "
                       "border band of border models); a warning counts the objects that reach it")
    large.add_argument("--resume", action="store_true", help="continue an interrupted prediction from the "
                       "finished blocks its work folder recorded (same image, model and options)")
    where = large.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_args.positive_int, help="run the network pass (in bands of rows) and the "
                       "decoding (in blocks) of Zarr/NGFF outputs and large instance images on a local Dask cluster "
                       "of this many worker processes, one thread each; the output equals a one-process run")
    where.add_argument("--scheduler", metavar="ADDRESS", help="the same on the workers of a running Dask scheduler "
                       "(e.g. tcp://host:8786 started by dask-jobqueue); they must reach the input and output files")
    large.add_argument("--band-rows", type=_args.positive_int, metavar="ROWS", help="with --workers or --scheduler: "
                       "rows of the image per network task (rounded up to whole output chunks; default: two bands "
                       "per worker, at least a row of tiles). Tiles on a band border are computed by both bands: "
                       "taller bands waste less, shorter ones spread over more workers")
    execution = p.add_argument_group("execution")
    _args.add_tiles(execution)
    execution.add_argument("--tta", nargs="?", const="all", default=None, type=_args.tta,
                           help="test-time augmentation: average over all 8 flips/rotations, or over the listed "
                           "symmetry indices (e.g. --tta 0,4)")
    execution.add_argument("--checkpoint", choices=("best", "last"), default="best",
                           help="which checkpoint of the run to use (default best)")
    _args.add_precision(execution)
    _args.add_threads(execution)
    _args.add_device(execution)
    _args.add_verbosity(execution)
    p.set_defaults(func=run)


def _block_size(text: str) -> int:
    """A block side of at least 8 pixels."""
    value = _args.positive_int(text)
    if value < 8:
        raise argparse.ArgumentTypeError(f"blocks are at least 8 pixels wide, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    import warnings

    from tqdm.auto import tqdm

    from fluoseg.bioimage.foreign import load_model
    from fluoseg.device import set_threads
    from fluoseg.errors import FluosegError
    from fluoseg.infer import PredictOptions
    from fluoseg.cluster import dask_client
    from fluoseg.io import OutputLock, prepare_output_dir, read_image
    from fluoseg.predict import (ON_DISK_FORMATS, UNCERTAINTY_TABLE, BlockOptions, check_inputs, check_work_folders, check_writable,
                                 expand_inputs, output_paths, predict_file, predict_uncertainty_file,
                                 write_uncertainty_table)
    from fluoseg.uncertainty import UncertaintyOptions, check_uncertainty

    uncertainty = None
    if args.uncertainty is not None:
        uncertainty = UncertaintyOptions(method=args.uncertainty, measure=args.uncertainty_measure,
                                         samples=args.uncertainty_passes)
    images = expand_inputs(args.images)
    out_dir = prepare_output_dir(args.out, overwrite=True, what="output folder")  # other files may stay there
    paths = output_paths(images, out_dir, fmt=args.format, probabilities=args.probabilities, objects=args.objects,
                         uncertainty=uncertainty is not None)
    done = set(check_work_folders(paths, resume=args.resume))
    for image, target in zip(images, paths):
        if target.masks in done:
            print(f"{image} -> {target.masks} (done before; --resume keeps it)")
    images, paths = [i for i, t in zip(images, paths) if t.masks not in done], [t for t in paths if t.masks not in done]
    check_writable(paths, overwrite=args.overwrite, others=[out_dir / UNCERTAINTY_TABLE] if uncertainty else [])
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
    aliases = _args.marker_aliases(args.markers)
    options = PredictOptions(
        markers=segmenter.parse_markers(_args.chosen_markers(args.markers)) if args.markers else None,
        tile_size=args.tile_size,
        batch_size=args.batch_size, tta=args.tta or False, progress=not args.quiet,
        diameter=None if diameter_um is not None else args.diameter, blank_snr=args.blank_snr,
        stitch_threshold=args.stitch_threshold, precision=args.precision)
    check_inputs(segmenter, images, options, channel_names=args.channel_names, axes=args.axes, aliases=aliases)
    if uncertainty is not None:
        check_uncertainty(segmenter, uncertainty)
    rows: list[dict[str, object]] = []
    shared = segmenter.task_name == "instance" or (segmenter.task_name == "semantic" and args.format in ON_DISK_FORMATS)
    distributed = (args.workers, args.scheduler) if shared else (None, None)
    if distributed == (None, None) and (args.workers or args.scheduler):
        warnings.warn(f"--workers and --scheduler share out instance models and Zarr/NGFF outputs of semantic ones; "
                      f"this model's task is {segmenter.task_name} with --format {args.format}, so everything runs in "
                      "this process")
    with OutputLock(out_dir, what="output folder"), dask_client(*distributed) as client:
        blocks = BlockOptions(block_size=args.block_size, block_depth=args.block_depth, halo=args.halo,
                              resume=args.resume, client=client, band_rows=args.band_rows)
        out_dir.mkdir(parents=True, exist_ok=True)
        for image, target in tqdm(list(zip(images, paths)), desc="predict", unit="image", disable=args.quiet):
            written = predict_file(segmenter, image, target, options, channel_names=args.channel_names,
                                   axes=args.axes, diameter_um=diameter_um, overwrite=args.overwrite, aliases=aliases,
                                   blocks=blocks)
            print(f"{image} -> {written}")
            if uncertainty is not None and target.uncertainty is not None:
                rows.append(predict_uncertainty_file(
                    segmenter, image, target.uncertainty, options, uncertainty, channel_names=args.channel_names,
                    axes=args.axes, diameter_um=diameter_um, overwrite=args.overwrite, aliases=aliases))
                # rewritten after every image (checked up front), so an interrupted run keeps the rows it made
                write_uncertainty_table(out_dir, rows, overwrite=True)
                print(f"{image} -> {target.uncertainty}")
    return 0

"""``fluoseg tune``: choose a model's decoding parameters on annotated images.

For a run, on its validation images, stored in the run. For a pretrained model (``nuclei``
or a zoo folder), on the images of ``--data``, written as a re-tuned copy to ``--out``.
"""

from __future__ import annotations

import argparse

import fluoseg.cli._args as _args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="tune an instance model's decoding (h, threshold, min size; detection models: "
                       "min score) on annotated images",
                       description="Predict annotated images as 'fluoseg predict' would and search the decoding "
                       "parameters that maximise the objective. For a run directory: on its validation images, "
                       "stored in the run; 'fluoseg predict' then uses them (unless --h, --threshold, --min-size or "
                       "--min-score override them); for a detection run (Mask R-CNN, LACSS) the detection score "
                       "threshold is tuned. For a pretrained model (name or folder): on the images of --data, written "
                       "as a copy of the model to --out, to be used as 'fluoseg predict OUT IMAGES --out DIR'.")
    p.add_argument("run_dir", metavar="RUN_OR_MODEL",
                   help="instance run directory written by 'fluoseg train', or pretrained model name or folder "
                   "('fluoseg models')")
    p.add_argument("--objective", choices=("f1_mean", "f1_0.5", "accuracy_mean", "aji"), default="f1_mean",
                   help="what to maximise, pooled over the images: F1 averaged over IoU 0.5:0.95 (default), "
                   "F1 at IoU 0.5, accuracy TP/(TP+FP+FN) averaged over IoU 0.5:0.95, or the AJI")
    p.add_argument("--samples", type=_args.names,
                   help="sample ids to tune on (default: the run's validation split; a pretrained model: every "
                   "sample of --data)")
    p.add_argument("--data", help="manifest holding the annotated samples (default: the run's data manifest; "
                   "required for a pretrained model)")
    p.add_argument("--markers", type=_args.marker_choice,
                   help="markers to use, as for 'fluoseg predict'; MODEL=FILE reads the samples' FILE channel as the "
                   "model's MODEL marker (e.g. DNA=DAPI for the pretrained nuclei model)")
    p.add_argument("--out", help="pretrained models: folder to write the re-tuned copy to")
    _args.add_overwrite(p, "an existing --out folder's model files")
    p.add_argument("--rounds", type=_args.positive_int, default=1, help="grid refinements around the best (default 1)")
    p.add_argument("--tta", action="store_true", help="predict with test-time augmentation, as predict --tta would")
    execution = p.add_argument_group("execution")
    _args.add_tiles(execution)
    _args.add_precision(execution)
    _args.add_threads(execution)
    _args.add_device(execution)
    _args.add_verbosity(execution)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fluoseg.bioimage.sources import resolve_model
    from fluoseg.device import set_threads
    from fluoseg.errors import FluosegError
    from fluoseg.infer import PredictOptions
    from fluoseg.io import OutputLock
    from fluoseg.tuning import tune_pretrained, tune_run
    from fluoseg.zoo import is_zoo_folder

    source = resolve_model(args.run_dir)
    set_threads(args.threads)
    options = PredictOptions(tile_size=args.tile_size, batch_size=args.batch_size, tta=args.tta,
                             precision=args.precision,
                             markers=_args.chosen_markers(args.markers))
    common = {"objective": args.objective, "samples": args.samples, "options": options, "rounds": args.rounds,
              "device": args.device, "aliases": _args.marker_aliases(args.markers)}
    if is_zoo_folder(source):
        if not args.data or not args.out:
            raise FluosegError("a pretrained model has no validation images of its own: give --data MANIFEST (your "
                               "annotated images) and --out FOLDER (where the re-tuned copy goes)", path=source)
        with OutputLock(args.out, what="model folder"):
            tune_pretrained(source, args.out, manifest=args.data, overwrite=args.overwrite, **common)
        return 0
    if args.out:
        raise FluosegError("--out is for pretrained models; a run stores its tuned decoding in itself (leave out "
                           "--out)", path=source)
    with OutputLock(source, what="run folder"):
        tune_run(source, manifest=args.data, **common)
    return 0

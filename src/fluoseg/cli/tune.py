"""``fluoseg tune``: choose an instance run's decoding parameters on its validation images."""

from __future__ import annotations

import argparse

import fluoseg.cli._args as _args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="tune an instance run's decoding (h, threshold, min size; detection models: "
                       "min score) on validation images",
                       description="Predict the run's validation images as 'fluoseg predict' would, search the "
                       "decoding parameters that maximise the objective, and store them in the run; 'fluoseg "
                       "predict' then uses them (unless --h, --threshold, --min-size or --min-score override them). "
                       "For a detection model (Mask R-CNN, LACSS) the detection score threshold is tuned.")
    p.add_argument("run_dir", metavar="RUN", help="instance run directory written by 'fluoseg train'")
    p.add_argument("--objective", choices=("f1_mean", "f1_0.5", "accuracy_mean", "aji"), default="f1_mean",
                   help="what to maximise, pooled over the images: F1 averaged over IoU 0.5:0.95 (default), "
                   "F1 at IoU 0.5, accuracy TP/(TP+FP+FN) averaged over IoU 0.5:0.95, or the AJI")
    p.add_argument("--samples", type=_args.names, help="sample ids to tune on (default: the run's validation split)")
    p.add_argument("--data", help="manifest holding the samples (default: the run's data manifest)")
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
    from fluoseg.device import set_threads
    from fluoseg.infer import PredictOptions
    from fluoseg.io import OutputLock
    from fluoseg.tuning import tune_run

    set_threads(args.threads)
    options = PredictOptions(tile_size=args.tile_size, batch_size=args.batch_size, tta=args.tta,
                             precision=args.precision)
    with OutputLock(args.run_dir, what="run folder"):
        tune_run(args.run_dir, objective=args.objective, samples=args.samples, manifest=args.data, options=options,
                 rounds=args.rounds, device=args.device)
    return 0

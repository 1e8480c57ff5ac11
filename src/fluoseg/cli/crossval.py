"""``fluoseg crossval``: compare run configurations by k-fold cross-validation on the same folds."""

from __future__ import annotations

import argparse

import fluoseg.cli._args as _args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crossval", help="k-fold cross-validation of one or more configs on the same folds",
                       description="Train every config on every fold (by sample/group, the same folds for all), "
                       "score the held-out samples, and compare the configs. Rerun to resume.")
    p.add_argument("configs", nargs="+", help="run configurations (YAML); the first is the reference")
    p.add_argument("--folds", type=_args.positive_int, required=True, help="number of folds")
    p.add_argument("--out", required=True, help="output folder (rerunning resumes it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and training subsets (default 0)")
    p.add_argument("--train-sizes", type=_args.integers,
                   help="training-set-size sweep, e.g. 1,10,50 (nested subsets per fold)")
    p.add_argument("--tta", action="store_true", help="predict with test-time augmentation (reuses trained folds)")
    p.add_argument("--tile-size", type=_args.tile_size,
                   help="prediction tile size (default: train.val_tile_size, else 572)")
    _args.add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fluoseg.experiments.config_comparison import compare_configs
    from fluoseg.io import OutputLock, prepare_output_dir

    prepare_output_dir(args.out, overwrite=True, what="cross-validation folder")  # a rerun resumes it
    with OutputLock(args.out, what="cross-validation folder"):
        result = compare_configs(args.configs, args.out, folds=args.folds, seed=args.seed,
                                 train_sizes=args.train_sizes, tta=args.tta, tile_size=args.tile_size,
                                 progress=not args.quiet)
    print((result.out / f"summary{'_tta' if args.tta else ''}.md").read_text())
    return 0

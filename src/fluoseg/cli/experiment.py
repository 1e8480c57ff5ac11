"""``fluoseg experiment ...``: the MS-ME paper's experiments from the command line.

The commands load their modules (and torch) only when they run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import fluoseg.cli._args as _args

_positive = _args.positive_int


def _claim_folder(path: str, what: str) -> Any:
    """Check an output folder before work (it may hold results to resume) and lock it while writing."""
    from fluoseg.io import OutputLock, prepare_output_dir

    prepare_output_dir(path, overwrite=True, what=what)
    return OutputLock(path, what=what)


def _load_config(path: str, device: str) -> Any:
    from fluoseg.config import load_config

    config = load_config(path)
    if device != "auto":
        config.train.device = device
    return config


def cmd_upper_bound(args: argparse.Namespace) -> int:
    from fluoseg.experiments.upper_bound import run_upper_bound

    config = _load_config(args.config, args.device)
    with _claim_folder(args.out, "experiment folder"):
        rows, plans = run_upper_bound(config, args.out, folds=args.folds, combinations=args.combinations,
                                      max_combinations=args.max_combinations, epochs=args.epochs, method=args.method,
                                      tile_size=args.tile_size, batch_size=args.batch_size, progress=not args.quiet)
    for plan in plans:
        print(f"fold {plan.fold}: trainable {len(plan.trainable)} of {plan.total} combinations "
              f"(|M^UB|/|M^total| = {plan.ratio:.2f}), trained {len(plan.chosen)}")
    print(f"upper bound: {len(rows)} result rows in {Path(args.out) / 'upper_bound.csv'}; "
          f"trainable combinations in {Path(args.out) / 'trainable.csv'}")
    return 0


def _print_estimates(rows: list[dict]) -> None:
    """One line per method, class and fold on how well label-free expected F1 tracks the true F1."""
    from fluoseg.experiments.results import estimate_quality

    for q in estimate_quality(rows):
        print(f"{q['method']:<12}{q['class']:<14} fold {q['fold']}: expected F1 vs F1 over {q['n_combinations']} "
              f"combinations: Spearman {q['spearman_expected_f1']:.3f}, mean |error| "
              f"{q['mean_abs_error_expected_f1']:.4f}, mean pixel ECE {q['mean_ece']:.4f}")


def cmd_combinations(args: argparse.Namespace) -> int:
    from fluoseg.experiments.combinations import evaluate_run
    from fluoseg.experiments.results import mean_table

    with _claim_folder(args.out, "evaluation folder"):
        rows = evaluate_run(args.run_dir, args.data, args.out, sample_ids=args.samples, fold=args.fold,
                            method=args.method, checkpoint=args.checkpoint, device=args.device, tile_size=args.tile_size,
                            batch_size=args.batch_size, progress=not args.quiet)
    for (method, class_name), (mean, sd, n) in mean_table(rows).items():
        print(f"{method:<12}{class_name:<14} mean F1 {mean:.4f} (sd {sd:.4f}, n={n})")
    _print_estimates(rows)
    print(f"results: {Path(args.out) / 'combinations.csv'} and {Path(args.out) / 'combinations_summary.csv'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from fluoseg.experiments.compare import compare_results, format_tests

    with _claim_folder(args.out, "comparison folder"):
        found = compare_results(args.results, args.reference, args.out, unit=args.unit,
                                marker_effects=args.marker_effect or (), plot=not args.no_plot)
    print(format_tests(found["tests"]))
    for e in found["effects"]:
        print(f"{e['method']:<12}{e['class']:<14} with {e['marker']}: {e['mean_with']:.4f} (n={e['n_with']}), "
              f"without: {e['mean_without']:.4f} (n={e['n_without']}), Mann-Whitney p={e['p_value']:.3g} {e['stars']}")
    print("written: " + ", ".join(str(f) for f in found["files"]))
    return 0


def cmd_panels(args: argparse.Namespace) -> int:
    from fluoseg.experiments.panels import CASES, make_case_manifest
    from fluoseg.io import check_output_file

    check_output_file(args.out, overwrite=args.overwrite, what="manifest")
    assignment, (n_ub, n_total) = make_case_manifest(args.manifest, args.case, args.out, seed=args.seed,
                                                     sample_ids=args.samples, overwrite=args.overwrite)
    print(f"case {args.case}: {CASES[args.case]}")
    for sample_id, markers in assignment.items():
        print(f"  {sample_id}: {', '.join(markers)}")
    print(f"|M^UB|/|M^total| = {n_ub}/{n_total} = {n_ub / n_total:.2f} "
          f"over the {len(assignment)} sample(s) given panels")
    print(f"manifest: {args.out}")
    return 0


def cmd_crossval(args: argparse.Namespace) -> int:
    from fluoseg.experiments.combinations import crossval_combinations
    from fluoseg.experiments.results import mean_table

    config = _load_config(args.config, args.device)
    with _claim_folder(args.out, "cross-validation folder"):
        rows = crossval_combinations(config, args.out, folds=args.folds, method=args.method or Path(args.config).stem,
                                     seed=args.seed, case=args.case, case_seed=args.case_seed, epochs=args.epochs,
                                     tile_size=args.tile_size, batch_size=args.batch_size, progress=not args.quiet)
    for (method, class_name), (mean, sd, n) in mean_table(rows).items():
        print(f"{method:<12}{class_name:<14} mean F1 {mean:.4f} (sd {sd:.4f}, n={n})")
    _print_estimates(rows)
    print(f"results: {Path(args.out) / 'combinations.csv'}")
    return 0


def cmd_me_analysis(args: argparse.Namespace) -> int:
    from fluoseg.experiments.me_analysis import analyse_run

    with _claim_folder(args.out, "analysis folder"):
        rows, files = analyse_run(args.run_dir, args.out, checkpoint=args.checkpoint, plot=not args.no_plot)
    for r in rows:
        print(f"{r['member']:<10}{r['label']:<14} mean cosine distance {r['mean_cosine_distance']:.4f} "
              f"(sd {r['sd_cosine_distance']:.4f})")
    print("written: " + ", ".join(str(f) for f in files))
    return 0


def _add_execution(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("execution")
    _args.add_tiles(group, "evaluation")
    _args.add_device(group)
    _args.add_verbosity(group)


def add_parser(sub: Any) -> None:
    """Add ``experiment`` and its subcommands to the subparsers ``sub`` of the main CLI."""
    parser = sub.add_parser("experiment", help="marker-combination experiments of the MS-ME paper")
    commands = parser.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT",
                                     parser_class=_args.Parser)

    p = commands.add_parser("upper-bound", help="one network per trainable marker combination (UB)")
    p.add_argument("config", help="run configuration (YAML); its network becomes the UB network (MZ, no attention)")
    p.add_argument("--out", required=True, help="output folder (resumable: finished combinations are skipped)")
    p.add_argument("--folds", type=_positive, help="cross-validation folds by sample (default: the config's split)")
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--combinations", help="comma-separated combination codes to train, e.g. m_12,m_135")
    choice.add_argument("--max-combinations", type=_positive,
                        help="train at most N trainable combinations, spread from single markers to all")
    p.add_argument("--epochs", type=_positive, help="override train.epochs of the UB networks")
    p.add_argument("--method", default="UB", help="method name in the results (default UB)")
    _add_execution(p)
    p.set_defaults(func=cmd_upper_bound)

    p = commands.add_parser("combinations", help="evaluate a run on every marker subset of its test samples")
    p.add_argument("run_dir", help="run directory written by 'fluoseg train'")
    p.add_argument("--data", required=True, help="dataset manifest holding the test samples")
    p.add_argument("--out", required=True, help="output folder (combinations.csv, combinations_summary.csv)")
    p.add_argument("--samples", type=_args.names, help="comma-separated sample ids (default: the run's test split)")
    p.add_argument("--fold", type=int, default=0, help="fold number written into the results")
    p.add_argument("--method", help="method name written into the results (default: the run folder's name)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint (default best)")
    _add_execution(p)
    p.set_defaults(func=cmd_combinations)

    p = commands.add_parser("compare", help="paired differences to a reference method, Wilcoxon and Mann-Whitney")
    p.add_argument("results", nargs="+", help="combinations CSV files (any number of methods and folds)")
    p.add_argument("--reference", required=True, help="reference method, e.g. MS or UB")
    p.add_argument("--out", required=True, help="output folder for tables and boxplots")
    p.add_argument("--unit", choices=("sample", "fold", "network"), default="sample",
                   help="pair per sample, per fold with counts pooled over its test samples (the paper's unit), or "
                   "per independently trained network (mean over combinations; paired t-test)")
    p.add_argument("--marker-effect", type=_args.names, help="comma-separated markers: F1 of combinations with vs without each "
                   "(Mann-Whitney U)")
    p.add_argument("--no-plot", action="store_true", help="tables only")
    p.set_defaults(func=cmd_compare)

    p = commands.add_parser("panels", help="give samples heterogeneous marker panels (the paper's Cases 1-6)")
    p.add_argument("manifest", help="source dataset manifest")
    p.add_argument("--case", type=int, required=True, choices=range(1, 7), metavar="{1..6}", help="which case")
    p.add_argument("--out", required=True, help="manifest to write (a copy with 'available' per sample)")
    p.add_argument("--seed", type=int, default=0, help="shuffle of samples to panels")
    p.add_argument("--samples", type=_args.names,
                   help="comma-separated samples receiving panels (the training samples; default all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output manifest")
    p.set_defaults(func=cmd_panels)

    p = commands.add_parser("crossval", help="k-fold cross-validation by sample with all-combination evaluation")
    p.add_argument("config", help="run configuration (YAML)")
    p.add_argument("--out", required=True, help="output folder (resumable: finished folds are skipped)")
    p.add_argument("--folds", type=_positive, default=4, help="number of folds (default 4)")
    p.add_argument("--method", help="method name in the results (default: the config file's name)")
    p.add_argument("--seed", type=int, help="seed of the fold shuffle (default: the config's data.split.seed)")
    p.add_argument("--case", type=int, choices=range(1, 7), metavar="{1..6}",
                   help="train with the heterogeneous panels of this case, reshuffled per fold")
    p.add_argument("--case-seed", type=int, default=0, help="seed of the case's shuffle (fold k uses seed + k)")
    p.add_argument("--epochs", type=_positive, help="override train.epochs")
    _add_execution(p)
    p.set_defaults(func=cmd_crossval)

    p = commands.add_parser("me-analysis", help="recalibration strength of Marker Excite layers (Supp. Fig. 6)")
    p.add_argument("run_dir", help="run directory of a model with Marker Excite attention")
    p.add_argument("--out", required=True, help="output folder (me_layers.csv, me_layers.png)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint (default best)")
    p.add_argument("--no-plot", action="store_true", help="table only")
    p.set_defaults(func=cmd_me_analysis)


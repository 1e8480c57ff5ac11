"""``fluoseg evaluate``: score predicted masks or labels against ground truth."""

from __future__ import annotations

import argparse
import fluoseg.cli._args as _args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score predicted masks against ground truth",
                       description="Pair prediction and truth files by name and write tidy metrics, per image and "
                       "pooled over all images (image ALL).")
    p.add_argument("--pred", required=True, help="folder of predicted masks or label images")
    p.add_argument("--truth", required=True, help="folder of ground-truth files with the same names")
    p.add_argument("--out", required=True, help="CSV file to write (semantic: image,class,metric,value; "
                   "instance: image,metric,threshold,value)")
    p.add_argument("--task", choices=("semantic", "instance"), default="semantic",
                   help="masks per class, or instance label images")
    p.add_argument("--classes", type=_args.names, help="comma-separated class names of the mask channels")
    _args.add_overwrite(p, "an existing CSV")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fluoseg.evaluate import evaluate, instance_summary, summary_table, write_rows
    from fluoseg.io import check_output_file

    out = check_output_file(args.out, overwrite=args.overwrite, what="metrics file")
    rows = evaluate(args.pred, args.truth, task=args.task, classes=args.classes)
    write_rows(rows, out, overwrite=args.overwrite)
    print(instance_summary(rows) if args.task == "instance" else summary_table(rows))
    print(f"metrics: {out}")
    return 0

"""``fluoseg models``: the pretrained models shipped with fluoseg, with their cards."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the pretrained models shipped with fluoseg",
                       description="List the pretrained models (use a name where a run directory is expected, "
                       "e.g. 'fluoseg predict nuclei images/ --out masks/'), or show one model's card.")
    p.add_argument("name", nargs="?", help="show the full card of this model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fluoseg import zoo

    if args.name:
        print(zoo.get(args.name).card)
        return 0
    models = zoo.available()
    if not models:
        print("no pretrained models are installed")
    for model in models:
        print(f"{model.name:<12} {model.summary}")
    return 0

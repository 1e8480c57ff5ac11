"""``fluoseg points``: point annotations (one per object) derived from instance labels."""

from __future__ import annotations

import argparse

import fluoseg.cli._args as _args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("points", help="derive point annotations (one per object) from instance labels",
                       description="Write one point per labelled object of every sample (its centroid, moved "
                       "inside the object when it falls outside) as OUT/points/<id>.csv with columns y,x, and "
                       "OUT/manifest.yaml: the source manifest plus 'points:'. Train LACSS from it with "
                       "instance.supervision: points.")
    p.add_argument("--data", required=True, help="dataset manifest whose samples have instance labels")
    p.add_argument("--out", required=True, help="output folder (points/<id>.csv and manifest.yaml)")
    _args.add_overwrite(p, "an existing output folder")
    _args.add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fluoseg.points import derive_points

    manifest = derive_points(args.data, args.out, overwrite=args.overwrite)
    print(f"points: {manifest.parent / 'points'} (manifest {manifest})")
    return 0

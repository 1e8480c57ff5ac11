"""``fluoseg quantify``: volume fraction of each class inside a tissue mask, per sample and region."""

from __future__ import annotations

import argparse
from pathlib import Path

import fluoseg.cli._args as _args
from fluoseg.errors import FluosegError


def region_names(text: str) -> dict[int, str]:
    """``--region-names``: ``ID=NAME`` pairs such as ``1=diaphysis,2=metaphysis``."""
    names: dict[int, str] = {}
    for item in _args.names(text):
        number, _, name = item.partition("=")
        try:
            region = int(number)
        except ValueError:
            region = -1
        if region < 1 or not name.strip():
            raise argparse.ArgumentTypeError(f"--region-names takes ID=NAME pairs with ids >= 1 such as "
                                             f"1=diaphysis,2=metaphysis; got {item!r}")
        names[region] = name.strip()
    return names


def pixel_size(text: str) -> list[float]:
    """``--pixel-size``: one size in µm for every axis (``0.65``) or one per axis (``2,0.65,0.65``)."""
    try:
        sizes = [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pixel-size takes µm per pixel such as 0.65 or 2,0.65,0.65; "
                                         f"got {text!r}") from None
    if not 1 <= len(sizes) <= 3 or not all(0 < s < float("inf") for s in sizes):
        raise argparse.ArgumentTypeError(f"--pixel-size takes 1, 2 or 3 positive sizes in µm, got {text!r}")
    return sizes


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantify", help="volume fraction of each class inside a tissue mask, per sample and region",
                       description="Count each class's pixels inside the tissue (per region, and over the whole "
                       "image as region 'all') and their fraction of the tissue, as the MS-ME paper's vessel volume "
                       "fractions; with a pixel size also in µm² (2D) or µm³ (3D). One sample per masks file; Zarr "
                       "is read window by window. Writes a tidy CSV (sample,region,class,metric,value) and a box "
                       "plot of the fractions.")
    p.add_argument("masks", nargs="+", metavar="MASKS", help="mask files ((classes, [Z,] Y, X) of 0/1, e.g. the "
                   "output of 'fluoseg predict') or folders of them")
    p.add_argument("--out", required=True, help="CSV file to write")
    p.add_argument("--plot", help="PNG box plot of the fractions to write (default: the CSV's name with .png)")
    p.add_argument("--no-plot", action="store_true", help="write the CSV only")
    p.add_argument("--tissue", nargs="+", metavar="TISSUE", help="tissue masks (one channel of 0/1): one file per "
                   "masks file in the same order, or a folder holding a file of the same name as each masks file "
                   "(default: every pixel is tissue)")
    p.add_argument("--regions", nargs="+", metavar="REGIONS", help="regions, given like --tissue: a label image "
                   "(0 = no region, one id per region) or a file with one mask channel per (named) region")
    p.add_argument("--region-names", type=region_names, help="names of region ids, e.g. 1=diaphysis,2=metaphysis "
                   "(default: the ids)")
    p.add_argument("--classes", type=_args.names, help="comma-separated class names of the mask channels "
                   "(default: the channel names stored in the masks file)")
    p.add_argument("--pixel-size", type=pixel_size, help="µm per pixel: one size for every axis or ([z,] y, x) "
                   "(default: from the masks file's metadata, else the tissue file's; without one, pixel counts only)")
    p.add_argument("--block", type=_args.positive_int, default=1024,
                   help="window side in pixels for reading large images (default 1024)")
    _args.add_overwrite(p, "an existing CSV or plot")
    _args.add_verbosity(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fluoseg.io import check_output_file, write_csv_atomically
    from fluoseg.quantify import plot_fractions, quantify_files

    out = check_output_file(args.out, overwrite=args.overwrite, what="table")
    plot = None
    if not args.no_plot:
        plot = check_output_file(args.plot or out.with_suffix(".png"), overwrite=args.overwrite, what="plot")
        if plot == out:
            raise FluosegError("the plot would replace the CSV; give --plot a .png file name", out)
    masks = _image_files(args.masks, "masks")
    rows = quantify_files(masks, _paired(args.tissue, masks, "tissue"), _paired(args.regions, masks, "regions"),
                          class_names=args.classes, region_names=args.region_names, pixel_size=args.pixel_size,
                          block=args.block)
    if plot is not None:  # before the CSV: a failed plot leaves no table behind either
        plot_fractions(rows, plot)
    write_csv_atomically(out, rows, fields=("sample", "region", "class", "metric", "value"))
    if not args.quiet:
        print(_summary(rows))
    print(f"table: {out}" + (f"\nplot: {plot}" if plot is not None else ""))
    return 0


def _is_image(path: Path) -> bool:
    from fluoseg.io import supported_suffixes

    return any(path.name.lower().endswith(s) for s in supported_suffixes())


def _image_files(paths: list[str], what: str) -> list[Path]:
    """Files as given, folders (other than Zarr images) replaced by their image files in name order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FluosegError(f"{what} input not found; check the path", path)
        if path.is_dir() and not _is_image(path):
            images = sorted(p for p in path.iterdir() if not p.name.startswith(".") and _is_image(p))
            if not images:
                raise FluosegError(f"no {what} images in this folder", path)
            found += images
        else:
            found.append(path)
    return found


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def _paired(paths: list[str] | None, masks: list[Path], what: str) -> list[Path] | None:
    """One ``what`` file per masks file: the files in order, or those of a folder matched by name."""
    if paths is None:
        return None
    folder = Path(paths[0])
    if len(paths) == 1 and folder.is_dir() and not _is_image(folder):
        by_stem = {_stem(p): p for p in _image_files([str(folder)], what)}
        missing = [m.name for m in masks if _stem(m) not in by_stem]
        if missing:
            raise FluosegError(f"no {what} file named like the masks {', '.join(missing)} in this folder; give files "
                         f"in the masks' order instead", folder)
        return [by_stem[_stem(m)] for m in masks]
    files = _image_files(paths, what)
    if len(files) != len(masks):
        raise FluosegError(f"{len(files)} {what} files were given for {len(masks)} masks files; give one per masks file "
                     f"or a folder of files named like them")
    return files


def _summary(rows: list[dict]) -> str:
    """The fractions as a small text table: sample, region, class, percent of tissue."""
    lines = [f"{'sample':<16}{'region':<14}{'class':<16}{'% of tissue':>12}"]
    for r in rows:
        if r["metric"] == "fraction":
            lines.append(f"{r['sample']:<16}{r['region']:<14}{r['class']:<16}{100 * r['value']:>12.3f}")
    return "\n".join(lines)

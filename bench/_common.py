"""Helpers shared by the benchmark scripts of ``bench/``.

The scripts run as ``python bench/NAME.py`` from the repository root, so this folder is the
first entry of ``sys.path`` and ``from _common import ...`` finds this module. It holds what
every script needs in the same way:

- timestamped progress lines (:func:`log`) and paths shown relative to the repository;
- JSON, text, YAML and CSV records written atomically through :mod:`fluoseg.io`: the
  scripts skip work whose output file exists, so a killed benchmark must never leave half
  a file that a rerun would trust;
- child processes (``fluoseg`` commands, peer jobs, installers) with their output appended
  to a log file, an optional deadline, and a SIGTERM handler that takes the child down too,
  so a killed benchmark never leaves a training running (:func:`run_logged`);
- the fixed DSB 2018 split and its manifests, shared by ``nuclei.py`` and ``peers.py``, and
  the vessels5 manifest of ``architectures.py`` and ``marker_combinations.py``;
- a run's per-epoch metrics (:func:`epoch_rows`), read through :class:`fluoseg.run.RunDir`;
- what two scripts computed each in their own way: a metric pooled over the test images
  (:func:`pooled_metric`) and the crop richest in foreground (:func:`densest_window`);
- the comparisons of reports whose unit is an independently trained network: paired
  t-tests over replicates (:func:`paired_test`), Welch's t-tests of unpaired groups of
  networks (:func:`welch_test`), Holm's correction over every test of a
  report (:func:`adjust_holm`), verdicts that follow the adjusted p-value, and the
  rendered README block between two markers (:func:`fill_readme_block`).

The jobs under ``bench/peers/`` that run in the peers' own virtual environments cannot
import fluoseg; they keep their standard-library helpers in ``bench/peers/common.py``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fluoseg.io import read_labels, write_csv_atomically, write_text_atomically
from fluoseg.metrics.stats import holm, paired_t_test, stars, welch_t_test

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
WORK = BENCH / "work"
RESULTS = BENCH / "results"

DSB2018 = Path("/work/shared/data/dsb2018_fluo")
VESSELS5 = Path("/work/shared/data/vessels5")
DSB_SPLIT = BENCH / "splits" / "dsb2018_fluo.json"
DSB_MARKER = "DNA"
SPLIT_SEED = 0
SPLIT_PATTERN = ("train",) * 8 + ("val", "test")  # 80/10/10
ROLES = ("train", "val", "test")


# ---- progress and records ---------------------------------------------------------------------

def log(message: str) -> None:
    """A timestamped progress line (the benchmarks are followed with ``tail -f``)."""
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def rel(path: str | Path) -> str:
    """``path`` relative to the repository when it lies inside it (reports stay machine-independent)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON record, or ``default`` when the file does not exist."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def write_json(path: Path, value: Any) -> Path:
    """Write a JSON record atomically; values JSON cannot hold (paths, numpy scalars) as text."""
    return write_text(path, json.dumps(value, indent=1, default=str))


def write_text(path: Path, text: str) -> Path:
    """Write a text file atomically, creating its folder."""
    return write_text_atomically(Path(path), text)


def write_yaml(path: Path, content: Any) -> Path:
    """Write ``content`` as YAML, leaving the file untouched when it already holds exactly that."""
    text = yaml.safe_dump(content, sort_keys=False)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text(path, text)
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as string dicts; empty when the file does not exist."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None) -> Path:
    """Write rows as CSV atomically; columns ``fields``, else every key in order of appearance."""
    return write_csv_atomically(Path(path), rows, fields=fields)


def accumulate(path: Path, **amounts: float) -> dict[str, float]:
    """Add ``amounts`` to the totals in a JSON record, so interrupted and resumed invocations add up."""
    totals = read_json(path, {})
    for key, value in amounts.items():
        totals[key] = totals.get(key, 0) + value
    write_json(path, totals)
    return totals


def zoo_version(name: str = "nuclei") -> str:
    """12 hex digits that change with a shipped model's weights or its ``model.json`` (which holds the
    tuned decoding): the key under which results computed from that model are cached."""
    import hashlib

    from fluoseg import zoo

    package = zoo.get(name).folder
    content = b"".join((package / file).read_bytes() for file in (zoo.WEIGHTS_FILE, zoo.MODEL_FILE))
    return hashlib.sha1(content).hexdigest()[:12]


def prediction_cache(name: str = "nuclei") -> str:
    """The folder name under which a benchmark caches what a shipped model predicted.

    :func:`zoo_version` and a hash of the package's source as it is now: a change to how fluoseg
    predicts (the diameter estimate, the decoding) leaves the model's version alone, and must
    not let a benchmark score predictions of the code before it.
    """
    import hashlib

    source = ROOT / "src" / "fluoseg"
    digest = hashlib.sha1()
    for path in sorted(source.rglob("*.py")):
        digest.update(path.relative_to(source).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{zoo_version(name)}-{digest.hexdigest()[:8]}"


def git_commit() -> str:
    """The checked-out commit of the repository (recorded with trainings and measurements)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def git_output(arguments: Sequence[str]) -> str | None:
    """The stripped output of ``git ARGUMENTS`` in the repository, or None when git fails or is missing."""
    try:
        done = subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


REGRID_COMMIT = "ff2be91"  # labels of rescaled images grown back along the resampled maps from here on


def descends_from(commit: str, ancestor: str) -> bool | None:
    """Whether ``commit`` is ``ancestor`` or one of its descendants; None when git cannot tell
    (no repository, or a commit it does not know)."""
    if git_output(["cat-file", "-e", f"{commit}^{{commit}}"]) is None:
        return None
    return git_output(["merge-base", "--is-ancestor", ancestor, commit]) is not None


# ---- comparisons at the level of independent replicates ------------------------------------------

ALPHA = 0.05
MIN_REPLICATES = 3  # issue 11: an effect a report claims rests on at least 3 folds or seeds


@dataclass
class Test:
    """One paired comparison of a report; ``p_holm`` is filled in by :func:`adjust_holm` once all tests are known."""

    part: str
    question: str
    n: int
    mean_difference: float
    p_value: float
    p_holm: float = float("nan")
    differences: tuple[float, ...] = ()  # method - reference per replicate, in the replicates' order
    n_reference: int | None = None  # unpaired (Welch) tests: the reference's replicates; ``n`` is the method's

    @property
    def n_label(self) -> str:
        """``3`` for a paired test, ``3+3`` (method + reference replicates) for an unpaired one."""
        return str(self.n) if self.n_reference is None else f"{self.n}+{self.n_reference}"

    def verdict(self, better: str = "helps", worse: str = "hurts", same: str = "no detectable difference",
                few: str = f"too few replicates (n < {MIN_REPLICATES})") -> str:
        """The words for the result: from the sign of the difference where the Holm-adjusted p is <= ALPHA."""
        if min(self.n, self.n if self.n_reference is None else self.n_reference) < MIN_REPLICATES:
            return few
        if not np.isfinite(self.p_holm) or self.p_holm > ALPHA:
            return same
        return better if self.mean_difference > 0 else worse

    def cell(self) -> str:
        """Table cells: mean difference | n | p | p (Holm) | stars of the Holm p with n beside them."""
        return (f"{self.mean_difference:+.3f} | {self.n_label} | {self.p_value:.3g} | {self.p_holm:.3g} | "
                f"{stars(self.p_holm)} (n={self.n_label})")


def paired_test(part: str, question: str, method: Mapping[Hashable, float],
                reference: Mapping[Hashable, float]) -> Test:
    """Paired t-test of one value per replicate (a seed, or a (fold, seed) network) over the replicates both have."""
    keys = sorted(set(method) & set(reference), key=lambda k: (len(str(k)), str(k)))  # "2" before "10"
    result = paired_t_test([method[k] for k in keys], [reference[k] for k in keys])
    return Test(part, question, result.n, result.mean_difference, result.p_value,
                differences=tuple(method[k] - reference[k] for k in keys))


def welch_test(part: str, question: str, method: Sequence[float], reference: Sequence[float]) -> Test:
    """Welch's t-test of two independent groups of networks (nothing pairs a replicate of one with one of the other).

    With fewer than :data:`MIN_REPLICATES` networks in either group there is no test (p is NaN,
    so Holm does not count it and the verdict says "too few replicates").
    """
    result = welch_t_test(method, reference)
    p_value = result.p_value if min(result.n_method, result.n_reference) >= MIN_REPLICATES else float("nan")
    return Test(part, question, result.n_method, result.mean_difference, p_value, n_reference=result.n_reference)


def adjust_holm(tests: Sequence[Test]) -> None:
    """Fill in ``p_holm`` of every test: Holm's correction over the whole family (a report's tests together)."""
    for test, adjusted in zip(tests, holm([t.p_value for t in tests])):
        test.p_holm = float(adjusted)


def mean_sd(values: Sequence[float], *, signed: bool = False) -> str:
    """``mean ± sd`` (sd with ddof 1; left out for one value; the mean with its sign if ``signed``), ``–`` for none."""
    values = np.asarray(list(values), dtype=float)
    if values.size == 0:
        return "–"
    sd = f" ± {values.std(ddof=1):.3f}" if values.size > 1 else ""
    return f"{values.mean():{'+' if signed else ''}.3f}{sd}"


def fill_readme_block(begin: str, end: str, block: str, readme: Path = ROOT / "README.md") -> Path:
    """Replace the README's block from the line ``begin`` to the line ``end`` (both kept) with ``block``.

    ``block`` is the whole block, markers included, ending in a newline.

    Raises
    ------
    SystemExit
        If the README has no such block (a report never appends one at a guessed place).
    """
    text = readme.read_text(encoding="utf-8")
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise SystemExit(f"{rel(readme)} has no {begin} ... {end} block to fill; add the two lines where it belongs")
    return write_text(readme, text[:start] + block + text[stop + len(end) + 1:])


# ---- child processes ---------------------------------------------------------------------------

_CHILDREN: set[subprocess.Popen] = set()  # running children (several when a script runs units in threads)
_STOPPING = threading.Event()  # set once the benchmark stops: no new child starts (threads may still try)
POLL_SECONDS = 5.0


@dataclass(frozen=True)
class Finished:
    """How a child process ended: exit status, wall seconds, and whether the deadline stopped it."""

    code: int
    seconds: float
    stopped: bool = False


def stop_children() -> None:
    """Terminate the running children and refuse new ones: a stopping benchmark whose threads would go on."""
    _STOPPING.set()
    for child in list(_CHILDREN):
        if child.poll() is None:
            child.terminate()


def _terminate_child(signum: int, frame: Any) -> None:
    stop_children()
    raise SystemExit(128 + signum)


def terminate_child_on_sigterm() -> None:
    """Make SIGTERM end the running children too (a killed benchmark must not leave a training behind).

    Ctrl-C needs nothing: the terminal sends SIGINT to the child's process group as well.
    """
    signal.signal(signal.SIGTERM, _terminate_child)


def child_env(threads: int, *, peer: bool = False) -> dict[str, str]:
    """The environment of a child: ``threads`` for every numerical library, unbuffered output.

    A peer (a tool in its own venv) gets no PYTHONPATH/VIRTUAL_ENV/PYTHONHOME of ours.
    """
    env = dict(os.environ)
    if peer:
        for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(key, None)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               NUMBA_NUM_THREADS=str(threads), TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1",
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    return env


def fluoseg_command(*args: Any) -> list[str]:
    """``fluoseg ARGS`` run with this interpreter (the project's venv)."""
    return [sys.executable, "-m", "fluoseg.cli", *map(str, args)]


def run_logged(command: Sequence[Any], log_path: Path, *, threads: int, peer: bool = False,
               deadline: float | None = None, poll: Callable[[], None] | None = None) -> Finished:
    """Run a command with its output appended to ``log_path``.

    Parameters
    ----------
    command
        Program and arguments (converted to strings).
    log_path
        Log file; the command line is written before its output.
    threads
        Thread count for the child's numerical libraries (:func:`child_env`).
    peer
        The command runs in a peer's own venv (our Python paths removed).
    deadline
        A ``time.time()`` value: the child is terminated (killed a minute later) when it passes.
    poll
        Called every few seconds while the child runs, and once after it ended (e.g. to log
        finished epochs).
    """
    if _STOPPING.is_set():
        raise RuntimeError(f"the benchmark is stopping: {Path(str(command[0])).name} not started")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [str(c) for c in command]
    started = time.time()
    stopped = False
    polled = started
    with log_path.open("a", encoding="utf-8") as handle:
        handle.write(f"\n$ {' '.join(command)}\n")
        handle.flush()
        child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                 env=child_env(threads, peer=peer), cwd=ROOT)
        _CHILDREN.add(child)
        try:
            while True:
                try:
                    child.wait(timeout=1)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if deadline is not None and time.time() > deadline:
                    stopped = True
                    child.terminate()
                    try:
                        child.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        child.kill()
                        child.wait()
                    break
                if poll is not None and time.time() - polled >= POLL_SECONDS:
                    polled = time.time()
                    poll()
        finally:
            _CHILDREN.discard(child)
    if poll is not None:
        poll()
    return Finished(code=child.returncode, seconds=time.time() - started, stopped=stopped)


def run_fluoseg(args: Sequence[Any], log_path: Path, *, threads: int, what: str | None = None,
                poll: Callable[[], None] | None = None) -> float:
    """Run ``fluoseg ARGS`` (see :func:`run_logged`); returns its wall seconds.

    Raises
    ------
    RuntimeError
        If it fails: its exit status and the end of its log.
    """
    finished = run_logged(fluoseg_command(*args), log_path, threads=threads, poll=poll)
    if finished.code != 0:
        raise RuntimeError(f"{what or f'fluoseg {args[0]}'} failed with exit status {finished.code}; "
                           f"log {rel(log_path)}:\n{log_tail(log_path)}")
    return finished.seconds


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, progress-bar lines left out and long lines cut."""
    if not path.is_file():
        return ""
    text = [line[-300:] for line in path.read_text(errors="replace").splitlines() if "it/s]" not in line]
    return "\n".join(text[-lines:])


@contextmanager
def recorded(record: Callable[[float], None]) -> Iterator[None]:
    """Hand the block's wall seconds to ``record`` however it ends, so interrupted and resumed runs add up."""
    started = time.perf_counter()
    try:
        yield
    finally:
        record(time.perf_counter() - started)


def megapixels(path: Path) -> float:
    """Pixels of the first page of a TIFF file, in millions (read from its header only)."""
    import tifffile

    shape = tifffile.TiffFile(path).pages[0].shape
    return shape[0] * shape[1] / 1e6


def predict_test_images(name: str, vdir: Path, images: Path, test_ids: Sequence[str], *, device: str, threads: int,
                        extra: Sequence[Any] = ()) -> None:
    """``fluoseg predict`` of the run in ``vdir/run`` on the test images still missing from ``vdir/pred``.

    The DSB marker is chosen by name; ``extra`` adds options (e.g. ``--diameter auto``). Wall
    time, images and megapixels of what was written accumulate in ``vdir/timing.json`` (also
    for an interrupted call), and a stale ``eval.csv`` is removed.
    """
    pred = vdir / "pred"
    missing = [i for i in test_ids if not (pred / f"{i}.tif").is_file()]
    if not missing:
        log(f"{name}: prediction done, skipped")
        return
    (vdir / "eval.csv").unlink(missing_ok=True)
    paths = [images / f"{i}.tif" for i in missing]
    log(f"{name}: predicting {len(missing)} test images")

    def record(seconds: float) -> None:
        written = [p for i, p in zip(missing, paths) if (pred / f"{i}.tif").is_file()]
        accumulate(vdir / "timing.json", predict_wall_s=seconds, predict_images=len(written),
                   predict_megapixels=sum(megapixels(p) for p in written))

    with recorded(record):
        wall = run_fluoseg(["predict", vdir / "run", *paths, "--out", pred, "--markers", DSB_MARKER, "--quiet",
                            "--device", device, *extra], vdir / "predict.log", threads=threads)
    log(f"{name}: prediction finished in {wall:.0f} s ({wall / len(missing):.2f} s/image)")


def densest_window(mask: np.ndarray, size: int, step: int = 16) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window holding the most foreground pixels.

    Windows start on a ``step`` grid or at the centre; on ties the one nearest the centre wins.
    A side shorter than ``size`` gives a window starting at 0 (cut by the image border).
    """
    height, width = mask.shape
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    centre = (max(height - size, 0) // 2, max(width - size, 0) // 2)
    best, best_key = centre, (-1, 0)
    for y in sorted({*range(0, max(height - size, 0) + 1, step), centre[0]}):
        for x in sorted({*range(0, max(width - size, 0) + 1, step), centre[1]}):
            y1, x1 = min(y + size, height), min(x + size, width)
            count = integral[y1, x1] - integral[y, x1] - integral[y1, x] + integral[y, x]
            key = (int(count), -abs(y - centre[0]) - abs(x - centre[1]))
            if key > best_key:
                best, best_key = (y, x), key
    return best


def pooled_metric(rows: Sequence[dict[str, Any]], name: str, threshold: float | None = None) -> float:
    """A metric pooled over all images from ``fluoseg.metrics.instance.instance_rows`` rows.

    The rows may be as returned (``threshold`` None or a float) or read back from the CSV of
    ``fluoseg evaluate`` (strings, ``""`` for no threshold). NaN when the metric is absent.
    """
    from fluoseg.metrics.semantic import ALL_IMAGES

    for row in rows:
        if row["image"] != ALL_IMAGES or row["metric"] != name:
            continue
        at = None if row["threshold"] in (None, "") else float(row["threshold"])
        if (at is None) if threshold is None else (at is not None and abs(at - threshold) < 1e-9):
            return float(row["value"]) if row["value"] not in (None, "") else math.nan
    return math.nan


# ---- runs ----------------------------------------------------------------------------------------

def epoch_rows(run: Path) -> list[dict[str, str]]:
    """``metrics.csv`` rows (strings) of a run's first member network; empty before its first epoch."""
    from fluoseg.run import RunDir  # deferred: loads torch

    directory = RunDir(run)
    if not (directory.path / RunDir.INDEX).is_file():
        return []
    return directory.metrics(directory.members()[0])


# ---- DSB 2018: the fixed split and manifests ----------------------------------------------------

def dsb_split(data: Path = DSB2018, *, sizes: dict[str, int] | None = None) -> dict[str, list[str]]:
    """The image ids per role of the fixed split ``bench/splits/dsb2018_fluo.json``.

    The split is made once (:func:`make_dsb_split`) and reused by every benchmark, so all of
    them test on the same images. ``sizes`` keeps the first N ids of each role (smoke runs).
    """
    if DSB_SPLIT.is_file():
        split = read_json(DSB_SPLIT)
        log(f"split: {rel(DSB_SPLIT)} (train {len(split['train'])}, val {len(split['val'])}, "
            f"test {len(split['test'])})")
    else:
        split = make_dsb_split(data)
        write_json(DSB_SPLIT, split)
        log(f"split written: {rel(DSB_SPLIT)} (train {len(split['train'])}, val {len(split['val'])}, "
            f"test {len(split['test'])})")
    roles = {role: list(split[role]) for role in ROLES}
    if sizes:
        roles = {role: ids[: sizes[role]] for role, ids in roles.items()}
    return roles


def make_dsb_split(data: Path) -> dict[str, Any]:
    """80/10/10 by image, seeded, stratified by image shape.

    Systematic sampling: images ordered by shape stratum (shuffled within), then every 10th
    position goes to val and to test, so every image size is spread over the three roles.
    """
    import tifffile

    ids = sorted(p.name.split(".")[0] for p in (data / "images").glob("*.tif"))
    shapes = {i: tuple(tifffile.TiffFile(data / "images" / f"{i}.tif").pages[0].shape) for i in ids}
    rng = np.random.default_rng(SPLIT_SEED)
    ordered = []
    for shape in sorted(set(shapes.values())):
        members = [i for i in ids if shapes[i] == shape]
        ordered += [members[k] for k in rng.permutation(len(members))]
    pattern = [SPLIT_PATTERN[k] for k in rng.permutation(len(SPLIT_PATTERN))]
    roles: dict[str, list[str]] = {role: [] for role in ROLES}
    for position, image_id in enumerate(ordered):
        roles[pattern[position % len(pattern)]].append(image_id)
    return {
        "dataset": "dsb2018_fluo",
        "description": "80/10/10 by image, seeded, stratified by image shape (systematic sampling over "
                       "shape-sorted, within-shape shuffled images); created once by bench/nuclei.py",
        "seed": SPLIT_SEED,
        **{role: sorted(members) for role, members in roles.items()},
        "shapes": {f"{h}x{w}": {role: sum(shapes[i] == (h, w) for i in roles[role]) for role in roles}
                   for h, w in sorted(set(shapes.values()))},
    }


def dsb_manifest(path: Path, data: Path, ids: Sequence[str]) -> Path:
    """A fluoseg manifest of DSB 2018 images (one ``DNA`` channel) with their instance labels."""
    return write_yaml(path, {"root": str(data), "markers": [DSB_MARKER],
                             "samples": [{"id": i, "image": f"images/{i}.tif", "labels": f"labels/{i}.tif"}
                                         for i in ids]})


def dsb_target_diameter(work: Path, data: Path, train_ids: Sequence[str]) -> float:
    """Median over training images of their mean equivalent-circle nucleus diameter (pixels); cached."""
    path = work / "target_diameter.json"
    cached = read_json(path)
    if cached is not None:
        return float(cached["target_diameter"])
    from fluoseg.instance.scale import estimate_diameter_from_labels

    per_image = [estimate_diameter_from_labels(read_labels(data / "labels" / f"{i}.tif")) for i in train_ids]
    value = round(float(np.median(per_image)), 1)
    write_json(path, {"target_diameter": value, "statistic": "median over training images of the mean "
                      "equivalent-circle diameter", "n_images": len(per_image),
                      "range": [round(float(min(per_image)), 1), round(float(max(per_image)), 1)]})
    return value


# ---- vessels5 ------------------------------------------------------------------------------------

def vessels_manifest(path: Path, data: Path = VESSELS5) -> Path:
    """A manifest of the vessels5 samples (5 markers, sinusoids and arteries at 1 µm/px) with an absolute root.

    ``examples/vessels5/manifest.yaml`` holds the same with a root relative to the main checkout,
    which does not resolve from other checkouts (git worktrees) of the repository.
    """
    return write_yaml(path, {"root": str(data), "markers": ["DAPI", "endomucin", "endoglin", "collagen", "CXCL12-GFP"],
                             "classes": ["sinusoids", "arteries"], "pixel_size_um": 1.0, "images": "images/*.tif",
                             "masks": "masks/{id}.tif"})

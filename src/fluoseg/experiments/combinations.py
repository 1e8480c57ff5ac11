"""All-combination evaluation: a trained run scored on every marker subset of its test samples.

MS-ME Methods ("Marker combination strategies"): test samples are ablated to every
non-empty marker combination ``m_G``, and each is segmented and scored. Here a sample's
combinations are the non-empty subsets of the markers it was stained with
(:attr:`Sample.usable_markers`) that the model knows; the model receives exactly the
subset (:meth:`Segmenter.predict_masks` with ``markers=subset``), the other slots zero
and unavailable. Scores go into the long results table of :mod:`.results`.

Each row also carries what the subset's probability maps predict without the ground
truth: the expected TP/FP/FN and F1 of the decoded mask if every pixel's label were drawn
with its predicted probability (``expected_f1 = 2 sum(p m) / (sum m + sum p)``, derived in
:mod:`fluoseg.metrics.calibration`), and the pixel ECE of those probabilities against the
true mask. ``combinations_estimates.csv`` then says per class and fold how well expected F1
ranks the subsets (Spearman) and how far it is from the true F1
(:func:`fluoseg.experiments.results.estimate_quality`): a way to tell, on unlabelled
images, which marker subsets can be trusted.

Instance runs (U-Net instance methods; not detectors) are scored the same way with one
class, ``objects``: TP/FP/FN are *objects* matched at IoU >= 0.5 (F1@0.5, the instance
metric of :mod:`fluoseg.metrics.matching`), while expected counts and ECE are those of
the foreground probability (:meth:`InstanceTask.foreground_probability`) against the
objects' pixels, since objects have no per-object probability to take an expectation
over. Expected F1 then ranks subsets; its distance to the object F1 is not a calibrated
error.

Work is cached per sample (``samples/<id>.csv`` next to the tables), so an interrupted
evaluation resumes with the samples it had not finished.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.config import RunConfig
from fluoseg.data.manifest import Manifest, load_manifest
from fluoseg.data.sample import Sample
from fluoseg.errors import FluosegError
from fluoseg.experiments.crossval import Log, Unit, run_crossval
from fluoseg.experiments.results import read_results, result_row, write_csv, write_tables
from fluoseg.markers import MarkerPanel
from fluoseg.metrics.calibration import expected_calibration_error, expected_confusion
from fluoseg.metrics.matching import matching_at_thresholds
from fluoseg.metrics.semantic import per_class_confusion

INSTANCE_CLASS = "objects"
"""The one class of an instance run's rows (objects matched at IoU 0.5)."""

SAMPLE_CACHE = "samples"
"""Sub-folder of an evaluation's output holding one finished CSV per sample."""

SCORING_PRECISION = "float32"
"""Arithmetic of every scored prediction: ``auto`` would pick bfloat16 on some CPUs and GPUs
and not on others, so a cross-validation's scores, cached per sample and compared between
methods run on different days and machines, would depend on where each method ran."""


def sample_combinations(panel: MarkerPanel, sample: Sample,
                        only: Collection[tuple[str, ...]] | None = None) -> list[tuple[str, ...]]:
    """Marker subsets a sample can be evaluated with, in the panel's subset order.

    Parameters
    ----------
    panel
        The model's marker panel.
    sample
        The test sample; its usable markers that the panel knows define the subsets.
    only
        Keep only these subsets (each a tuple of names in panel order), e.g. the one
        combination of an upper-bound model.
    """
    usable = [m for m in panel.names if m in sample.usable_markers and m in sample.channel_names]
    if not usable:
        return []
    subsets = MarkerPanel(usable).subsets()
    return [s for s in subsets if only is None or s in only]


def _pixel_size(sample: Sample, image_pixel_size: tuple[float, ...] | None, n_spatial: int) -> tuple[float, ...] | None:
    size = sample.pixel_size or image_pixel_size
    if size is None:
        return None
    size = tuple(size)
    if len(size) == 1:  # an isotropic size from the manifest: one value per spatial axis
        size = size * n_spatial
    return size


def evaluate_sample(segmenter: Any, sample: Sample, subsets: Sequence[tuple[str, ...]], *, method: str, fold: int,
                    tile_size: int | None = None, batch_size: int = 1, bar: Any = None) -> list[dict[str, Any]]:
    """Rows of one sample: every class on every subset in ``subsets``.

    The image is read once; channels the model does not know are left out before
    prediction (they could not be used anyway), and the masks of the model's classes are
    read from the sample. Expected counts and ECE come from the same prediction's class
    probabilities (no extra pass).
    """
    panel = segmenter.panel
    image = sample.read_image()
    keep = [i for i, name in enumerate(sample.channel_names) if name in panel.names]
    array = np.asarray(image.array)[keep]
    names = [sample.channel_names[i] for i in keep]
    spatial = tuple(array.shape[1:])
    pixel_size = _pixel_size(sample, image.pixel_size, len(spatial))
    if segmenter.task_name == "instance":
        return _instance_rows(segmenter, sample, array, names, subsets, method=method, fold=fold,
                              pixel_size=pixel_size, tile_size=tile_size, batch_size=batch_size, bar=bar)
    truth = sample.read_masks(list(segmenter.classes), spatial)
    rows = []
    for subset in subsets:
        masks, probabilities = segmenter.predict_masks(array, names, markers=subset, pixel_size=pixel_size,
                                                       tile_size=tile_size, batch_size=batch_size,
                                                       precision=SCORING_PRECISION, source=str(sample.image_path))
        # float32 sums of softmax outputs may stray from [0, 1] by an ulp
        probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
        code = panel.subset_code(subset)
        confusions = per_class_confusion(masks, truth)
        for index, (class_name, counts) in enumerate(zip(segmenter.classes, confusions)):
            rows.append(result_row(
                method=method, class_name=class_name, combination=code, markers=subset, fold=fold,
                sample=sample.id, tp=counts.tp, fp=counts.fp, fn=counts.fn,
                expected=expected_confusion(probabilities[index], predicted=masks[index] > 0),
                ece=expected_calibration_error(probabilities[index], truth[index] > 0)))
        if bar is not None:
            bar.update(1)
    return rows


def _instance_rows(segmenter: Any, sample: Sample, array: np.ndarray, names: Sequence[str],
                   subsets: Sequence[tuple[str, ...]], *, method: str, fold: int, pixel_size: tuple[float, ...] | None,
                   tile_size: int | None, batch_size: int, bar: Any) -> list[dict[str, Any]]:
    """Rows of one sample for an instance run: object counts at IoU 0.5, foreground estimates."""
    truth = sample.read_labels(tuple(array.shape[1:]))
    rows = []
    for subset in subsets:
        # a fixed scale for every subset: an automatic diameter would differ between subsets
        labels, maps = segmenter.predict_labels(array, names, markers=subset, pixel_size=pixel_size,
                                                tile_size=tile_size, batch_size=batch_size, diameter="off",
                                                precision=SCORING_PRECISION, source=str(sample.image_path))
        foreground = np.clip(np.asarray(segmenter.task.foreground_probability(np.asarray(maps)), dtype=np.float64),
                             0.0, 1.0)
        counts = matching_at_thresholds(truth, labels, thresholds=0.5)[0]
        rows.append(result_row(
            method=method, class_name=INSTANCE_CLASS, combination=segmenter.panel.subset_code(subset), markers=subset,
            fold=fold, sample=sample.id, tp=counts.tp, fp=counts.fp, fn=counts.fn,
            expected=expected_confusion(foreground, predicted=labels > 0),
            ece=expected_calibration_error(foreground, truth > 0)))
        if bar is not None:
            bar.update(1)
    return rows


def evaluate_combinations(
    segmenter: Any,
    samples: Sequence[Sample],
    *,
    method: str,
    fold: int = 0,
    only: Collection[tuple[str, ...]] | None = None,
    cache_dir: str | Path | None = None,
    tile_size: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Score a segmenter on every marker combination of every sample.

    Parameters
    ----------
    segmenter
        A loaded :class:`fluoseg.infer.Segmenter` of a semantic or (U-Net) instance run.
    samples
        Test samples with masks for the segmenter's classes.
    method, fold
        Written into every row.
    only
        Restrict to these marker subsets (tuples of names in panel order).
    cache_dir
        Folder for one finished CSV per sample; samples found there are not recomputed.
    tile_size, batch_size
        Network input tile and tiles per forward pass.
    progress
        Show a progress bar over (sample, combination).

    Returns
    -------
    list of dict
        Long-table rows (see :mod:`.results`).
    """
    from tqdm.auto import tqdm

    from fluoseg.tasks.base import ObjectPredictor  # deferred: loads torch

    detector = isinstance(getattr(segmenter, "task", None), ObjectPredictor)
    if segmenter.task_name not in ("semantic", "instance") or detector:
        raise FluosegError("combination evaluation scores semantic masks or U-Net instance labels, "
                           f"but this run's task is {segmenter.task_name!r}{' (a detector)' if detector else ''}")
    plans = [(s, sample_combinations(segmenter.panel, s, only)) for s in samples]
    cache = Path(cache_dir) if cache_dir is not None else None
    todo = [(s, subsets) for s, subsets in plans if cache is None or not (cache / f"{s.id}.csv").is_file()]
    rows: list[dict[str, Any]] = []
    with tqdm(total=sum(len(c) for _, c in todo), desc=f"evaluate {method} fold {fold}", unit="combination",
              disable=not progress, dynamic_ncols=True) as bar:
        for sample, subsets in plans:
            cached = cache / f"{sample.id}.csv" if cache is not None else None
            if cached is not None and cached.is_file():
                # The cache holds scores; labels follow the current call (a renamed method stays consistent).
                rows.extend({**row, "method": method, "fold": fold} for row in read_results(cached))
                continue
            sample_rows = evaluate_sample(segmenter, sample, subsets, method=method, fold=fold, tile_size=tile_size,
                                          batch_size=batch_size, bar=bar)
            if cached is not None:
                write_csv(sample_rows, cached)
            rows.extend(sample_rows)
    return rows


def select_samples(manifest: Manifest, ids: Sequence[str] | None, *, default: Sequence[str] = ()) -> list[Sample]:
    """Samples by id (``ids``, else ``default``), refusing an empty selection."""
    chosen = list(ids) if ids else list(default)
    if not chosen:
        raise FluosegError("no test samples to evaluate: the run has no test split; name them with --samples",
                           path=manifest.path)
    return [manifest.sample(i) for i in chosen]


def evaluate_run(
    run_dir: str | Path,
    manifest: str | Path,
    out_dir: str | Path,
    *,
    sample_ids: Sequence[str] | None = None,
    fold: int = 0,
    method: str | None = None,
    checkpoint: str = "best",
    device: str = "auto",
    tile_size: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """The work behind ``fluoseg experiment combinations``: evaluate a run directory.

    Writes ``combinations.csv`` (long table) and ``combinations_summary.csv`` (mean/sd F1
    per class and combination) into ``out_dir``; per-sample results are cached in
    ``out_dir/samples/``. Samples default to the run's test split.
    """
    from fluoseg.infer import Segmenter  # deferred: loads torch
    from fluoseg.run import RunDir

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    data = load_manifest(manifest)
    samples = select_samples(data, sample_ids, default=RunDir.open(run_dir).split()["test"])
    segmenter = Segmenter.load(run_dir, checkpoint=checkpoint, device=device)
    rows = evaluate_combinations(segmenter, samples, method=method or run_dir.name, fold=fold,
                                 cache_dir=out_dir / SAMPLE_CACHE, tile_size=tile_size, batch_size=batch_size,
                                 progress=progress)
    if not rows:
        raise FluosegError("no sample has any marker of this model; nothing was evaluated", path=data.path)
    write_tables(rows, out_dir)
    return rows


@dataclass(frozen=True)
class CombinationScorer:
    """Every marker combination of every test sample (the MS-ME paper's evaluation).

    Parameters
    ----------
    method
        Method name written into the rows (default: the unit's config name).
    tile_size, batch_size
        Evaluation tiles.
    """

    method: str | None = None
    tile_size: int | None = None
    batch_size: int = 1

    RESULTS = "combinations.csv"

    def done(self, folder: Path) -> bool:
        return (folder / self.RESULTS).is_file()

    def read(self, unit: Unit, folder: Path) -> list[dict[str, Any]]:
        method = self.method or unit.name
        return [{**row, "method": method} for row in read_results(folder / self.RESULTS)]

    def score(self, unit: Unit, run_dir: Path, folder: Path, *, progress: bool = False) -> list[dict[str, Any]]:
        from fluoseg.infer import Segmenter  # deferred: loads torch

        segmenter = Segmenter.load(run_dir, device=unit.config.train.device)
        manifest = load_manifest(unit.config.data.manifest)
        rows = evaluate_combinations(segmenter, [manifest.sample(i) for i in unit.split.test],
                                     method=self.method or unit.name, fold=unit.fold, cache_dir=folder / SAMPLE_CACHE,
                                     tile_size=self.tile_size, batch_size=self.batch_size, progress=progress)
        write_csv(rows, folder / self.RESULTS)  # written last: marks the unit as done
        return rows


def crossval_combinations(config: RunConfig, out_dir: str | Path, *, folds: int = 4, method: str = "model",
                          seed: int | None = None, case: int | None = None, case_seed: int = 0,
                          epochs: int | None = None, tile_size: int | None = None, batch_size: int = 1,
                          progress: bool = True, log: Log = print) -> list[dict[str, Any]]:
    """Train a config once per fold and evaluate every marker combination of each fold's test samples.

    The work behind ``fluoseg experiment crossval``: :func:`fluoseg.experiments.crossval.run_crossval`
    with :class:`CombinationScorer`, the units filed under ``OUT/<method>/fold<k>/``, and the
    merged ``OUT/combinations.csv`` / ``combinations_summary.csv``.

    Parameters
    ----------
    config
        Run configuration (its ``data.split`` val/test lists are replaced by the folds).
    out_dir
        Output folder.
    folds
        Number of folds; every sample (group) is in exactly one fold's test split.
    method
        Method name in the results (and the folder of its units).
    seed
        Seed of the fold shuffle; default the config's ``data.split.seed``, so every method
        run with the same config seed gets the same folds.
    case, case_seed
        Heterogeneous training panels (Cases 1-6) and the seed of their shuffle.
    epochs
        Override ``train.epochs``.
    tile_size, batch_size
        Evaluation tiles.
    log
        Where progress lines go.

    Returns
    -------
    list of dict
        Long-table rows of all folds (see :mod:`.results`).
    """
    if epochs is not None:
        config = config.model_copy(deep=True)
        config.train.epochs = epochs
    scorer = CombinationScorer(method=method, tile_size=tile_size, batch_size=batch_size)
    rows = run_crossval({method: config}, out_dir, scorer, folds=folds,
                        seed=config.data.split.seed if seed is None else seed, case=case, case_seed=case_seed,
                        progress=progress, log=log)
    # Several methods may share OUT (the paper's comparisons): the merged tables hold all of them.
    every = [row for path in sorted(Path(out_dir).glob(f"*/fold*/{CombinationScorer.RESULTS}"))
             for row in read_results(path)]
    write_tables(every or rows, out_dir)
    return rows

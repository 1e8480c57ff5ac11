"""Tune an instance run's decoding on its validation images: the work behind ``fluoseg tune``.

A trained instance network outputs maps; the numbers that turn them into labels (the h of
the h-maxima, the foreground threshold, the smallest object kept) are not learned. As
StarDist tunes its thresholds after training, :func:`tune_run` predicts the run's
validation images exactly as ``fluoseg predict`` would (same diameter mode, TTA and tiles),
searches the decoding parameters on those maps (:func:`fluoseg.instance.tune.tune_decoding`)
and stores the best ones in the run (``<member>/decoding.json``), where prediction picks
them up. Test images are never used. A detection run (Mask R-CNN, LACSS) has no maps: its
detection score threshold ``min_score`` is chosen on the validation images' objects instead.

A pretrained model (``fluoseg models``) has no validation split of its own:
:func:`tune_pretrained` tunes its decoding on a lab's few annotated images and writes a copy
of the model with those parameters, which ``fluoseg predict COPY_FOLDER`` then uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.data.manifest import Manifest, load_manifest
from fluoseg.data.sample import Sample
from fluoseg.errors import FluosegError
from fluoseg.infer import PredictOptions, Segmenter
from fluoseg.instance.scale import estimate_diameter_from_labels
from fluoseg.instance.tune import DEFAULT_GRIDS, TuningImage, score_labels, tune_decoding
from fluoseg.io import write_csv_atomically
from fluoseg.run import RunDir
from fluoseg.tasks.detection import SCORE_GRID, labels_at_score


MAX_PASSES = 3
"""Predict-and-search passes of :func:`tune_run` at most, for a model whose scale is estimated (``--diameter auto``)."""


def tune_run(run_dir: str | Path, *, objective: str = "f1_mean", samples: Sequence[str] | None = None,
             manifest: str | Path | None = None, options: PredictOptions | None = None, rounds: int = 1,
             device: str = "auto", aliases: Mapping[str, str] | None = None, log: Callable[[str], None] = print
             ) -> dict[str, Any]:
    """Tune and store the decoding parameters of an instance run on validation images.

    Parameters
    ----------
    run_dir
        The trained run (one member).
    objective
        What to maximise, one of :data:`fluoseg.instance.tune.OBJECTIVES`.
    samples
        Sample ids to tune on; default the run's validation split.
    manifest
        The manifest holding them; default the run's data manifest.
    options
        How the images are predicted (TTA, tiles, diameter); default as ``fluoseg predict``.
    rounds
        Refinements of the grid around the best combination.
    device
        Where the network runs (``auto``, ``cpu``, ``cuda``).
    aliases
        Channel names of the samples to read as other markers of the model (file name -> model
        name, ``{"DAPI": "DNA"}``), as ``fluoseg predict --markers DNA=DAPI`` does.

    Returns
    -------
    dict
        The stored record: ``parameters``, ``objective``, ``value``, ``before`` (the objective with
        the parameters the run was trained with), ``passes``, ``samples``, ``seconds``. A
        scale-normalised model predicted with ``diameter="auto"`` estimates each image's scale
        from objects decoded with the current parameters, so the images are predicted again
        with the tuned parameters and searched again, up to :data:`MAX_PASSES` times, until the
        parameters stop changing (``passes``); then its estimates are calibrated against the
        annotated diameters (``diameter_bias`` among the parameters, when that scores higher).

    Raises
    ------
    FluosegError
        For a run that is not an instance run, has several members or no validation images.
    """
    started = time.perf_counter()
    run = RunDir.open(run_dir)
    members = run.members()
    if len(members) != 1:
        raise FluosegError(f"tuning needs a run of one network; this one has {members}", path=run.path)
    checkpoint = run.load(members[0], "best")  # the trained constants, without earlier tuning
    if checkpoint.task.get("name") != "instance":
        raise FluosegError(f"only instance runs have decoding parameters to tune; this run's task is "
                           f"{checkpoint.task.get('name')!r}", path=run.path)
    method = checkpoint.task.get("method", "border")
    ids = list(samples) if samples else run.split()["val"]
    if not ids:
        raise FluosegError("the run has no validation images to tune on; name some with --samples", path=run.path)
    source = Path(manifest) if manifest else Path((run.read_config().get("data") or {}).get("manifest", ""))
    data = load_manifest(source)
    if checkpoint.model.is_detector:
        return _tune_detector(run, members[0], checkpoint.task, ids, data, source, objective=objective,
                              options=options or PredictOptions(), device=device, aliases=aliases, log=log,
                              started=started)
    segmenter = Segmenter.load(run.path, device=device)
    trained = _decoding_of(checkpoint.task, method)
    search = tune_segmenter(segmenter, [data.sample(i) for i in ids], method=method, trained=trained,
                            objective=objective, options=options, rounds=rounds, aliases=aliases, log=log,
                            started=started, calibrate_diameter=True)
    record = _search_record(search, objective=objective, trained=trained, samples=ids, manifest=source,
                            started=started)
    run.write_decoding(members[0], record)
    write_csv_atomically(run.member_dir(members[0]) / "decoding_search.csv", search.table)
    log(f"tune: {objective} {search.before:.4f} with the trained parameters {trained} -> {search.value:.4f} "
        f"with {search.best}; stored in {run.member_dir(members[0]) / RunDir.DECODING}")
    return record


def tune_pretrained(model: str | Path, out: str | Path, *, manifest: str | Path, samples: Sequence[str] | None = None,
                    objective: str = "f1_mean", options: PredictOptions | None = None, rounds: int = 1,
                    device: str = "auto", aliases: Mapping[str, str] | None = None, overwrite: bool = False,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Tune a pretrained model's decoding on annotated images and write a copy that uses it.

    Parameters
    ----------
    model
        A shipped model's name (``"nuclei"``) or a zoo model folder.
    out
        The folder of the re-tuned copy (weights, ``model.json``, card, ``decoding.json``).
    manifest
        The manifest of the annotated images (images and masks), e.g. a handful from the lab's
        own microscope; never the images the result will be judged on.
    samples
        Sample ids to tune on; default every sample of the manifest.
    objective, options, rounds, device, aliases
        As in :func:`tune_run`.
    overwrite
        Replace the files of an existing ``out`` (``out`` may be the model folder itself).

    Returns
    -------
    dict
        The record stored as ``decoding.json``: as :func:`tune_run`'s, plus the ``model``
        it started from.

    Raises
    ------
    FluosegError
        For an unknown model, a model without decoding parameters (not an instance model, or a
        detection model), samples without masks, or existing files in ``out`` without
        ``overwrite`` (checked before any image is predicted).
    """
    from fluoseg import zoo

    started = time.perf_counter()
    folder = Path(model) if zoo.is_zoo_folder(model) else zoo.get(str(model)).folder
    zoo.check_zoo_folder(out, overwrite=overwrite, files=zoo.RETUNED_FILES)
    checkpoint = zoo.load_folder(folder)
    task = checkpoint.task
    if task.get("name") != "instance" or checkpoint.model.is_detector:
        raise FluosegError(f"only instance models with a map decoding have parameters to tune here; this model's "
                           f"task is {task.get('name')!r} (tune a detection model's run folder, then export it)",
                           path=folder)
    data = load_manifest(manifest)
    ids = list(samples) if samples else [sample.id for sample in data.samples]
    method = task.get("method", "border")
    trained = _decoding_of(task, method)
    segmenter = Segmenter.load(folder, device=device)
    search = tune_segmenter(segmenter, [data.sample(i) for i in ids], method=method, trained=trained,
                            objective=objective, options=options, rounds=rounds, aliases=aliases, log=log,
                            started=started, calibrate_diameter=True)
    record = {"model": folder.name, **_search_record(search, objective=objective, trained=trained, samples=ids,
                                                     manifest=manifest, started=started)}
    card = (folder / zoo.CARD_FILE).read_text(encoding="utf-8") if (folder / zoo.CARD_FILE).is_file() else ""
    card = card.rstrip() + "\n\n" + _retuned_card_section(record)
    zoo.write_retuned(folder, out, task_updates=search.best, card=card, record=record, overwrite=overwrite)
    log(f"tune: {objective} {search.before:.4f} with the model's parameters {trained} -> {search.value:.4f} with "
        f"{search.best} on {len(ids)} image(s); wrote {out} (use it as 'fluoseg predict {out} IMAGES --out DIR')")
    return record


def _decoding_of(task: Mapping[str, Any], method: str) -> dict[str, float]:
    """The decoding parameters a task holds, of those its method's search varies."""
    return {k: task[k] for k in DEFAULT_GRIDS[method] if k in task}


def _search_record(search: DecodingSearch, *, objective: str, trained: Mapping[str, float], samples: Sequence[str],
                   manifest: str | Path, started: float) -> dict[str, Any]:
    """What a map-decoding search stores (``decoding.json`` of a run or of a re-tuned copy)."""
    return {"parameters": search.best, "objective": objective, "value": search.value, "before": search.before,
            "trained_with": dict(trained), "passes": search.passes, "converged": search.converged,
            "samples": list(samples), "manifest": str(manifest), "seconds": round(time.perf_counter() - started, 1)}


def _retuned_card_section(record: Mapping[str, Any]) -> str:
    """The model card's note on a copy re-tuned by :func:`tune_pretrained`."""
    samples = ", ".join(record["samples"][:10]) + (", ..." if len(record["samples"]) > 10 else "")
    return (f"## Decoding re-tuned\n\nThe decoding of `{record['model']}` was tuned again with `fluoseg tune` on "
            f"{len(record['samples'])} annotated image(s) of `{record['manifest']}` ({samples}): "
            f"{record['trained_with']} -> {record['parameters']}; {record['objective']} on those images "
            f"{record['before']:.4f} -> {record['value']:.4f}. The weights are those of `{record['model']}`; its "
            "test scores above were measured with its own decoding.\n")


@dataclass(frozen=True)
class DecodingSearch:
    """What :func:`tune_segmenter` found."""

    best: dict[str, float]
    """The chosen decoding parameters."""
    value: float
    """Their objective value on the images predicted as ``fluoseg predict`` would with them."""
    table: list[dict[str, Any]]
    """Every combination the last pass's search tried."""
    before: float
    """The objective with the trained parameters."""
    passes: int
    """Predict-and-search passes made."""
    converged: bool
    """Whether the last search returned the parameters its images were predicted with (or one pass sufficed)."""


def tune_segmenter(segmenter: Segmenter, samples: Sequence[Sample], *, method: str, trained: Mapping[str, float],
                   objective: str = "f1_mean", options: PredictOptions | None = None, rounds: int = 1,
                   aliases: Mapping[str, str] | None = None, log: Callable[[str], None] = print,
                   started: float | None = None, calibrate_diameter: bool = False) -> DecodingSearch:
    """Search the decoding parameters of a loaded instance model on annotated images.

    Parameters
    ----------
    segmenter
        The model, e.g. :meth:`Segmenter.load` of a run or :meth:`Segmenter.pretrained`; its
        decoding is left at the best parameters found.
    samples
        Annotated images (never test images).
    method
        The model's instance method (its grid: :data:`fluoseg.instance.tune.DEFAULT_GRIDS`).
    trained
        The decoding parameters the model was trained with: the first pass predicts with them,
        and they are the ``before`` reference.
    objective, options, rounds, aliases
        As in :func:`tune_run`.
    log
        Called with one line per stage.
    started
        ``time.perf_counter()`` at the start of the caller's work, for the logged times.
    calibrate_diameter
        For a scale-normalised model predicted with ``diameter="auto"``: after the search,
        measure how much larger the model's own diameter estimates are than the annotated
        ones (median ratio over the images) and keep that ``diameter_bias`` (in ``best``)
        if predicting with it scores higher.

    Returns
    -------
    DecodingSearch
        The chosen parameters and their value, the objective before and the passes. A
        scale-normalised model predicted with ``diameter="auto"`` estimates each image's scale
        from objects decoded with the current parameters, so the images are predicted again
        with the tuned parameters and searched again, up to :data:`MAX_PASSES` times, until
        the parameters stop changing. The parameters kept are the best of those the images
        were predicted with, scored on their own maps, i.e. as predict would score them: the
        settled ones, or earlier ones (the start included) if they scored higher or the
        passes never settled. Tuning never returns less than ``before``.
    """
    started = time.perf_counter() if started is None else started
    options = options or PredictOptions()
    annotated = [_AnnotatedImage.read(sample, aliases) for sample in samples]

    def score(images: list[TuningImage], parameters: Mapping[str, float]) -> float:
        return tune_decoding(images, method=method, objective=objective, rounds=0,
                             grid={k: (v,) for k, v in parameters.items()}).value if parameters else float("nan")

    current = dict(trained)
    # With --diameter auto the scale a model predicts at comes from objects decoded with the current
    # parameters: maps predicted with the trained ones are not the maps predict will decode with the
    # tuned ones. So predict and search again with the tuned parameters until they stop changing.
    passes = MAX_PASSES if options.diameter == "auto" and segmenter.task.target_diameter else 1
    # (value on the maps predicted with them, parameters): what predict would score on these images
    as_predicted: list[tuple[float, dict[str, float]]] = []
    settled = False
    for attempt in range(passes):
        segmenter.set_decoding(**current)
        images = [item.maps(segmenter, options) for item in annotated]
        log(f"tune: predicted {len(images)} annotated images in {time.perf_counter() - started:.0f} s"
            + (f" (pass {attempt + 1}, diameters estimated with {current})" if passes > 1 else ""))
        as_predicted.append((score(images, current), current))
        result = tune_decoding(images, method=method, objective=objective, rounds=rounds, fixed=trained,
                               progress=lambda line: log(f"tune: {line}"))
        settled = all(result.best.get(k) == current.get(k) for k in result.best)
        if settled:
            break
        current = {**current, **result.best}
    converged = settled or passes == 1  # one pass: the maps do not depend on the decoding
    # Of the parameters the images were predicted with, keep the best as predicted: the passes may
    # cycle (the last search's best was scored on maps of other parameters), or settle on parameters
    # worth less than the ones they started from. Converged, the last search's best was scored on
    # maps predicted with it (or on maps that do not depend on the decoding) and is a candidate too.
    candidates = as_predicted + ([(result.value, {**current, **result.best})] if converged else [])
    value, best = max(candidates, key=lambda pair: pair[0])
    best = {**result.best, **best}
    if not converged:
        log(f"tune: not converged in {passes} passes; keeping {best}, {objective} {value:.4f} as predicted")
    elif value > result.value:
        log(f"tune: the passes settled on {result.best} ({objective} {result.value:.4f}); keeping {best}, "
            f"{value:.4f} as predicted")
    segmenter.set_decoding(**best)
    if calibrate_diameter and passes > 1:
        bias, value = _calibrate_diameter(segmenter, annotated, options, value,
                                          lambda images: score(images, best), log)
        best = {**best, "diameter_bias": bias} if bias is not None else best
    return DecodingSearch(best=best, value=value, table=result.table, before=as_predicted[0][0],
                          passes=attempt + 1, converged=converged)


def _calibrate_diameter(segmenter: Segmenter, annotated: Sequence[_AnnotatedImage], options: PredictOptions,
                        value: float, score: Callable[[list[TuningImage]], float],
                        log: Callable[[str], None]) -> tuple[float | None, float]:
    """The model's diameter overestimate on annotated images, if predicting with it scores above ``value``.

    Returns ``(diameter_bias, its value)``: the new calibration, or the one the model already
    had when that measures the same or the new one scores no higher. ``(None, value)``, the
    segmenter left as it was, when no image has objects or an uncalibrated model's calibration
    scores no higher.
    """
    previous = segmenter.task.diameter_bias
    segmenter.set_decoding(diameter_bias=1.0)  # the raw estimates
    ratios = [segmenter.estimate_diameter(item.image.array, item.channel_names, item.options(options))
              / estimate_diameter_from_labels(item.truth) for item in annotated if item.truth.max() > 0]
    if not ratios:
        segmenter.set_decoding(diameter_bias=previous)
        return None, value
    bias = round(float(np.median(ratios)), 4)
    measured = f"the model's diameter estimates are x{bias:g} the annotated ones (median of {len(ratios)} images)"
    in_effect = previous if previous != 1.0 else None
    segmenter.set_decoding(diameter_bias=bias)
    if bias == previous:  # a calibrated model tuned again: ``value`` was predicted with this very bias
        log(f"tune: {measured}, as calibrated before: kept")
        return bias, value
    calibrated = score([item.maps(segmenter, options) for item in annotated])
    kept = calibrated > value
    log(f"tune: {measured}; predicted with the estimates divided by it, {calibrated:.4f} against {value:.4f}: "
        + ("kept" if kept else "not kept" + (f" (the calibration before, x{previous:g}, stays)" if in_effect else "")))
    if not kept:
        segmenter.set_decoding(diameter_bias=previous)
        return in_effect, value
    return bias, calibrated


@dataclass(frozen=True)
class _AnnotatedImage:
    """A validation image read once, with its true labels, predicted again on every pass."""

    sample: Sample
    image: Any
    truth: np.ndarray
    channel_names: tuple[str, ...]
    """The sample's channel names under the model's names for them."""

    @classmethod
    def read(cls, sample: Sample, aliases: Mapping[str, str] | None = None) -> _AnnotatedImage:
        image = sample.read_image()
        names = tuple((aliases or {}).get(name, name) for name in sample.channel_names)
        return cls(sample=sample, image=image, truth=sample.read_labels(image.spatial_shape), channel_names=names)

    def options(self, options: PredictOptions) -> PredictOptions:
        """``options`` with this image's pixel size and source, as ``fluoseg predict`` passes them."""
        return options.replace(pixel_size=self.image.pixel_size, source=str(self.sample.image_path))

    def maps(self, segmenter: Segmenter, options: PredictOptions) -> TuningImage:
        """The maps as ``fluoseg predict`` computes them."""
        maps, _ = segmenter.model_scale_maps(self.image.array, self.channel_names, self.options(options))
        return TuningImage(maps=maps, truth=self.truth, name=self.sample.id)


def _tune_detector(run: RunDir, member: str, trained: dict[str, Any], ids: Sequence[str], data: Manifest,
                   source: Path, *, objective: str, options: PredictOptions, device: str,
                   aliases: Mapping[str, str] | None, log: Callable[[str], None], started: float) -> dict[str, Any]:
    """A detection run's score threshold (``min_score``) chosen on validation images.

    The images are predicted once keeping every detection (``min_score`` 0) and scored at
    every threshold of :data:`~fluoseg.tasks.detection.SCORE_GRID`
    (:func:`~fluoseg.tasks.detection.labels_at_score`).
    """
    segmenter = Segmenter.load(run.path, device=device)
    segmenter.set_decoding(min_score=0.0, threshold=trained["threshold"], min_size=trained["min_size"])
    found = []
    for sample_id in ids:
        item = _AnnotatedImage.read(data.sample(sample_id), aliases)
        found.append((item.truth, segmenter.detect_objects(item.image.array, item.channel_names,
                                                           item.options(options))))
    log(f"tune: predicted {len(found)} annotated images in {time.perf_counter() - started:.0f} s")

    def scored(min_score: float) -> dict[str, Any]:
        pairs = [(truth, labels_at_score(objects, min_score)) for truth, objects in found]
        return {"min_score": min_score, **score_labels(pairs, with_aji=objective == "aji")}

    rows = [scored(value) for value in SCORE_GRID]
    best = max(rows, key=lambda row: row[objective])
    before = scored(float(trained["min_score"]))[objective]
    record = {"parameters": {"min_score": best["min_score"]}, "objective": objective, "value": best[objective],
              "before": before, "trained_with": {"min_score": trained["min_score"]}, "samples": list(ids),
              "manifest": str(source), "seconds": round(time.perf_counter() - started, 1)}
    run.write_decoding(member, record)
    write_csv_atomically(run.member_dir(member) / "decoding_search.csv", rows)
    log(f"tune: {objective} {before:.4f} with min_score {trained['min_score']} -> {best[objective]:.4f} with "
        f"min_score {best['min_score']}; stored in {run.member_dir(member) / RunDir.DECODING}")
    return record


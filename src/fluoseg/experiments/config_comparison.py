"""Comparing run configurations by cross-validation: the work behind ``fluoseg crossval``.

``fluoseg crossval A.yaml B.yaml --folds 4 --out cv/`` trains every config on every fold
(:func:`fluoseg.experiments.crossval.run_crossval`: the same folds for every config,
optional nested training-set sizes) and scores each fold's test samples with
:class:`TestSetScorer`, as the transfer-learning study compares architectures and the
in-silico-labelling paper compares pretrained with untrained networks.

- **Scores** with fluoseg's metrics, per test sample and pooled over the fold (``sample``
  ``ALL``): semantic ``f1_<class>``, ``iou_<class>``, ``mean_f1``, ``mean_iou``; instance
  ``f1_at_0.5``, ``accuracy_at_0.5`` (TP/(TP+FP+FN)), ``aji`` (Kumar et al.),
  ``accuracy_mean_0.5_0.95`` (mean accuracy over IoU 0.5:0.05:0.95); regression
  ``pearson_<marker>``, ``mae_<marker>`` (in normalised intensity units). Each unit folder
  gets ``scores[_tta].csv`` and ``timing[_tta].json``.
- **Summary**: mean ± sd (sd with ddof 1) over folds of the pooled per-fold scores.
- **Paired comparison** of every config with each config before it on the command line, at
  the level of independently trained networks (per-fold pooled scores, paired t-test) and
  per sample (Wilcoxon), all p-values of a report Holm-adjusted together, star notation.

Besides the cross-validation layout, ``OUT`` gets ``per_sample[_tta].csv``,
``per_fold[_tta].csv``, ``summary[_tta].csv``, ``comparison[_tta].csv`` and ``summary[_tta].md``;
rerunning with ``--tta`` reuses the trained networks.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.config import load_config
from fluoseg.data.manifest import load_manifest
from fluoseg.experiments.crossval import FULL, Log, Unit, config_names, run_crossval
from fluoseg.io import write_csv_atomically, write_json_atomically, write_text_atomically
from fluoseg.metrics.semantic import ALL_IMAGES
from fluoseg.metrics.stats import holm, paired_t_test, paired_wilcoxon, stars


@dataclass(frozen=True)
class CrossvalResult:
    """What :func:`compare_configs` wrote: per-sample, per-fold, summary and comparison rows."""

    out: Path
    per_sample: list[dict[str, Any]]
    per_fold: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    comparison: list[dict[str, Any]]


def compare_configs(config_paths: Sequence[str | Path], out: str | Path, *, folds: int, seed: int = 0,
                    train_sizes: Sequence[int] | None = None, tta: bool = False, tile_size: int | None = None,
                    progress: bool = True, log: Log = print) -> CrossvalResult:
    """Cross-validate configs on shared folds and compare them; resumable (see the module notes).

    Parameters
    ----------
    config_paths
        Run configurations (YAML) to compare; the first is the reference of the summary.
    out
        Output folder.
    folds
        Number of folds (2 to the number of groups).
    seed
        Seed of the fold shuffle and of the training subsets.
    train_sizes
        Training-set sizes of a sweep; ``None`` trains on each fold's whole training split.
    tta
        Predict the test samples with test-time augmentation (8 flips/rotations).
    tile_size
        Prediction tile size; default each config's ``train.val_tile_size``, else 572.
    progress
        Show training progress bars.
    log
        Receives one line per step.
    """
    out = Path(out)
    names = config_names(config_paths)
    configs = {name: load_config(p) for name, p in zip(names, config_paths)}
    scorer = TestSetScorer(tta=tta, tile_size=tile_size)
    rows = run_crossval(configs, out, scorer, folds=folds, seed=seed, train_sizes=train_sizes, progress=progress,
                        log=log)
    per_sample = [r for r in rows if r["sample"] != ALL_IMAGES]
    per_fold = [r for r in rows if r["sample"] == ALL_IMAGES]
    summary = summarize(per_fold)
    comparison = compare(per_sample, names, per_fold)
    suffix = scorer.suffix
    write_csv_atomically(out / f"per_sample{suffix}.csv", per_sample)
    write_csv_atomically(out / f"per_fold{suffix}.csv", per_fold)
    write_csv_atomically(out / f"summary{suffix}.csv", summary)
    write_csv_atomically(out / f"comparison{suffix}.csv", comparison)
    write_text_atomically(out / f"summary{suffix}.md", summary_markdown(summary, comparison, names=names, folds=folds,
                                                                        tta=tta))
    log(f"summary: {out / f'summary{suffix}.md'}")
    return CrossvalResult(out=out, per_sample=per_sample, per_fold=per_fold, summary=summary, comparison=comparison)


INSTANCE_METRICS = {  # fluoseg.metrics.instance name and IoU threshold -> crossval name
    ("f1", 0.5): "f1_at_0.5",
    ("accuracy", 0.5): "accuracy_at_0.5",
    ("aji", None): "aji",
    ("accuracy_mean_over_thresholds", None): "accuracy_mean_0.5_0.95",
}


def read_scores(path: Path) -> list[dict[str, Any]]:
    """Rows of a scores CSV with ``value`` as float."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [dict(row, value=float(row["value"])) for row in csv.DictReader(handle)]


def _pixel_size(sample: Any, image: Any) -> tuple[float, ...] | None:
    size = sample.pixel_size or image.pixel_size
    if size is None:
        return None
    return tuple(size) * 2 if len(size) == 1 else tuple(size)


@dataclass(frozen=True)
class TestSetScorer:
    """Per-sample task metrics of a unit's test samples (see the module docstring).

    Parameters
    ----------
    tta
        Predict with test-time augmentation (all 8 flips/rotations); files get ``_tta``.
    tile_size
        Prediction tile size; default the config's ``train.val_tile_size``, else 572.
    """

    tta: bool = False
    tile_size: int | None = None

    @property
    def suffix(self) -> str:
        return "_tta" if self.tta else ""

    def done(self, folder: Path) -> bool:
        return (folder / f"scores{self.suffix}.csv").is_file()

    def read(self, unit: Unit, folder: Path) -> list[dict[str, Any]]:
        return [{"config": unit.name, "train_size": unit.size, "fold": unit.fold, **row}
                for row in read_scores(folder / f"scores{self.suffix}.csv")]

    def score(self, unit: Unit, run_dir: Path, folder: Path, *, progress: bool = False) -> list[dict[str, Any]]:
        rows, seconds = self.predict_and_score(unit, run_dir)
        write_json_atomically(folder / f"timing{self.suffix}.json", timing(run_dir, seconds, len(unit.split.test)))
        write_csv_atomically(folder / f"scores{self.suffix}.csv", rows)  # written last: marks the unit as done
        return rows

    def predict_and_score(self, unit: Unit, run_dir: Path) -> tuple[list[dict[str, Any]], float]:
        """Rows ``{sample, metric, value}`` per test sample and pooled, and the prediction wall time (s)."""
        from fluoseg.device import set_threads
        from fluoseg.infer import PredictOptions, Segmenter  # deferred: loads torch

        config = unit.config
        set_threads(config.train.num_threads)
        segmenter = Segmenter.load(run_dir, device=config.train.device)
        task = segmenter.task
        manifest = load_manifest(config.data.manifest)
        options = PredictOptions(tile_size=self.tile_size or config.train.val_tile_size, tta=self.tta,
                                 diameter="auto")
        items, seconds = [], 0.0
        for sample_id in unit.split.test:
            sample = manifest.sample(sample_id)
            image = sample.read_image()
            sample_options = options.replace(pixel_size=_pixel_size(sample, image), source=str(sample.image_path))
            started = time.perf_counter()
            if segmenter.task_name == "instance":
                prediction, _ = segmenter.predict_labels(image.array, sample.channel_names, sample_options)
            else:
                prediction = np.asarray(segmenter.predict_probabilities(image.array, sample.channel_names,
                                                                        sample_options))
                if segmenter.task_name == "semantic":
                    prediction = segmenter.decode(prediction)
            seconds += time.perf_counter() - started
            if segmenter.task_name == "semantic":
                truth = sample.read_masks(list(segmenter.classes), image.spatial_shape)
            elif segmenter.task_name == "instance":
                truth = sample.read_labels(image.spatial_shape)
            else:
                truth = task.make_targets(task.read_annotation(sample, image.spatial_shape))
            items.append((sample_id, prediction, truth))
        scorer = {"semantic": _semantic_scores, "instance": _instance_scores, "regression": _regression_scores}
        return scorer[segmenter.task_name](items, segmenter), seconds


def timing(run_dir: Path, predict_seconds: float, n_test: int) -> dict[str, Any]:
    """Training wall time (summed epoch times, so resumed runs add up), parameters, prediction time."""
    from fluoseg.run import RunDir  # deferred: loads torch

    run = RunDir.open(run_dir)
    return {"train_seconds": round(run.train_seconds(), 2), "predict_seconds": round(predict_seconds, 3),
            "n_test": n_test, "parameters": run.parameter_count()}


def _semantic_scores(items: list[tuple[str, Any, Any]], segmenter: Any) -> list[dict[str, Any]]:
    from fluoseg.metrics.semantic import semantic_rows

    rows = []
    tidy = semantic_rows([(n, p.astype(bool), t.astype(bool)) for n, p, t in items], class_names=segmenter.classes)
    for name in [n for n, _, _ in items] + [ALL_IMAGES]:
        values = {(r["class"], r["metric"]): r["value"] for r in tidy if r["image"] == name}
        for metric in ("f1", "iou"):
            per_class = [float(values[(c, metric)]) for c in segmenter.classes]
            rows += [{"sample": name, "metric": f"{metric}_{c}", "value": v}
                     for c, v in zip(segmenter.classes, per_class)]
            rows.append({"sample": name, "metric": f"mean_{metric}", "value": float(np.mean(per_class))})
    return rows


def _instance_scores(items: list[tuple[str, Any, Any]], segmenter: Any) -> list[dict[str, Any]]:
    from fluoseg.metrics.instance import instance_rows

    rows = []
    for r in instance_rows(items):
        threshold = None if r["threshold"] is None else round(float(r["threshold"]), 2)
        name = INSTANCE_METRICS.get((r["metric"], threshold))
        if name is not None:
            rows.append({"sample": r["image"], "metric": name, "value": float(r["value"])})
    return rows


def _regression_scores(items: list[tuple[str, Any, Any]], segmenter: Any) -> list[dict[str, Any]]:
    # Pearson and MAE from the task's running sums, per sample and pooled over the fold's pixels.
    task = segmenter.task
    rows, total = [], None
    for name, prediction, targets in items:
        counts = task.score_counts(prediction, targets)
        total = counts if total is None else total + counts
        rows += _regression_rows(name, task.score(counts))
    return rows + (_regression_rows(ALL_IMAGES, task.score(total)) if total is not None else [])


def _regression_rows(name: str, scores: dict[str, float]) -> list[dict[str, Any]]:
    return [{"sample": name, "metric": k, "value": float(v)} for k, v in scores.items() if k != "score"]


# ---- summary and comparison ------------------------------------------------------------------


def summarize(per_fold: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± sd over folds per (train size, config, metric)."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in per_fold:
        groups.setdefault((str(r["train_size"]), r["config"], r["metric"]), []).append(float(r["value"]))
    rows = []
    for (size, config, metric), values in groups.items():
        finite = np.asarray([v for v in values if np.isfinite(v)])
        rows.append({"train_size": size, "config": config, "metric": metric, "n_folds": len(values),
                     "mean": float(finite.mean()) if finite.size else float("nan"),
                     "sd": float(finite.std(ddof=1)) if finite.size > 1 else float("nan")})
    return rows


def compare(per_sample: Sequence[dict[str, Any]], names: Sequence[str],
            per_fold: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """Paired tests of each config against each earlier config, per size and metric, Holm-adjusted together.

    Two units: ``fold`` (each fold's pooled score is one independently trained network;
    paired t-test, the replicate level) and ``sample`` (per-sample scores, which share the
    fold's network; Wilcoxon signed-rank, as the papers report). ``p_holm`` adjusts every
    p-value of the report together; ``significance`` follows it.
    """
    rows = _tests(per_fold, names, unit="fold", key="fold") + _tests(per_sample, names, unit="sample", key="sample")
    for row, adjusted in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_holm"] = float(adjusted)
        row["significance"] = stars(float(adjusted))
    return rows


def _tests(scored: Sequence[dict[str, Any]], names: Sequence[str], *, unit: str, key: str) -> list[dict[str, Any]]:
    scores: dict[tuple[str, str, str], dict[Any, float]] = {}
    for r in scored:
        scores.setdefault((str(r["train_size"]), r["config"], r["metric"]), {})[r[key]] = float(r["value"])
    sizes = list(dict.fromkeys(str(r["train_size"]) for r in scored))
    metrics = list(dict.fromkeys(r["metric"] for r in scored))
    test = paired_t_test if unit == "fold" else paired_wilcoxon
    rows = []
    for size in sizes:
        for metric in metrics:
            for j, config in enumerate(names):
                for reference in names[:j]:
                    a, b = scores.get((size, config, metric), {}), scores.get((size, reference, metric), {})
                    units = [s for s in a if s in b and np.isfinite(a[s]) and np.isfinite(b[s])]
                    if not units:
                        continue
                    result = test([a[s] for s in units], [b[s] for s in units])
                    rows.append({"train_size": size, "metric": metric, "config": config, "reference": reference,
                                 "unit": unit, "test": "paired t" if unit == "fold" else "Wilcoxon", "n": result.n,
                                 "mean_difference": result.mean_difference,
                                 "median_difference": result.median_difference, "statistic": result.statistic,
                                 "p_value": result.p_value})
    return rows


def summary_markdown(summary: Sequence[dict[str, Any]], comparison: Sequence[dict[str, Any]], *,
                     names: Sequence[str], folds: int, tta: bool) -> str:
    """Readable tables: mean ± sd per config and metric, and the comparisons with the first config."""
    lines = [f"# Cross-validation ({folds} folds{', test-time augmentation' if tta else ''})", "",
             "Mean ± sd over folds of the scores pooled over each fold's test samples. Comparisons: "
             "each fold is one independently trained network, so the differences are tested over folds "
             "(two-sided paired t-test, n = folds); p-values are Holm-adjusted over every test of this "
             "report, per-sample Wilcoxon tests included (in comparison.csv) "
             "(* p <= 0.05, ** p <= 0.01, *** p <= 0.001).", ""]
    metrics = list(dict.fromkeys(r["metric"] for r in summary))
    for size in dict.fromkeys(r["train_size"] for r in summary):
        cell = {(r["config"], r["metric"]): r for r in summary if r["train_size"] == size}
        title = "all training samples" if size == FULL else f"N = {size} training samples"
        lines += [f"## {title}", "", "| config | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        for name in names:
            values = [f"{cell[(name, m)]['mean']:.3f} ± {cell[(name, m)]['sd']:.3f}" if (name, m) in cell else ""
                      for m in metrics]
            lines.append(f"| {name} | " + " | ".join(values) + " |")
        versus = [r for r in comparison if r["train_size"] == size and r["reference"] == names[0]
                  and r["unit"] == "fold"]
        if versus:
            lines += ["", f"Paired differences to {names[0]} (mean difference, significance, n):", "",
                      "| config | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
            for name in names[1:]:
                by_metric = {r["metric"]: r for r in versus if r["config"] == name}
                values = [_difference(by_metric[m]) if m in by_metric else "" for m in metrics]
                lines.append(f"| {name} | " + " | ".join(values) + " |")
        lines.append("")
    return "\n".join(lines)


def _difference(row: dict[str, Any]) -> str:
    return f"{row['mean_difference']:+.3f} {row['significance']} (n={row['n']})"

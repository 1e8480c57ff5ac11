"""Generic k-fold cross-validation of run configurations, and training-set-size sweeps.

``fluoseg crossval A.yaml B.yaml --folds 4 --out cv/`` trains every config on every fold
and scores the fold's test samples, as the transfer-learning study compares architectures
and the in-silico-labelling (ISL) paper compares pretrained with untrained networks:

- **Folds** by sample or group (:func:`fluoseg.data.split.kfold_splits`, shuffled with
  ``--seed``): every group is tested exactly once, the group after a fold's test groups
  validates, and the SAME folds serve every config (they must share their samples). The
  configs' own ``data.split`` is ignored.
- **Training-set sizes** (``--train-sizes 1,10,50``): each fold's training samples are
  shuffled once (seed ``(seed, fold)``) and the first N kept, so the sets are nested
  (N=1 ⊂ N=10 ⊂ N=50) and identical for every config; validation and test stay whole.
- **Scores** with fluoseg's metrics, per test sample and pooled over the fold (``sample``
  ``ALL``): semantic ``f1_<class>``, ``iou_<class>``, ``mean_f1``, ``mean_iou``; instance
  ``f1_at_0.5``, ``accuracy_at_0.5`` (TP/(TP+FP+FN)), ``aji`` (Kumar et al.),
  ``accuracy_mean_0.5_0.95`` (mean accuracy over IoU 0.5:0.05:0.95); regression
  ``pearson_<marker>``, ``mae_<marker>`` (in normalised intensity units).
- **Summary**: mean ± sd (sd with ddof 1) over folds of the pooled per-fold scores.
- **Paired comparison** of every config with each config before it on the command line:
  per-sample scores (every sample is a test sample once), two-sided Wilcoxon signed-rank
  test (:func:`fluoseg.metrics.stats.paired_wilcoxon`), star notation.

Layout of ``OUT`` (rerunning the command resumes: finished folds are skipped, an
interrupted training resumes, and ``--tta`` reuses the trained networks)::

    folds.json                       the folds (a rerun with other folds is refused)
    <config>/config.yaml             the config as first run (a changed config is refused)
    <config>/[n<N>/]fold<k>/run/     training run directory
    <config>/[n<N>/]fold<k>/scores[_tta].csv, timing[_tta].json   written when the fold is done
    per_sample[_tta].csv, per_fold[_tta].csv, summary[_tta].csv, comparison[_tta].csv, summary[_tta].md
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fluoseg.config import RunConfig, config_to_dict, load_config
from fluoseg.data.manifest import load_manifest
from fluoseg.data.split import Split, kfold_splits
from fluoseg.errors import FluosegError
from fluoseg.io import write_csv_atomically, write_text_atomically
from fluoseg.metrics.stats import paired_wilcoxon

ALL = "ALL"
FULL = "all"
"""``train_size`` of runs on the whole training split (no size sweep)."""

INSTANCE_METRICS = {  # fluoseg.metrics.instance name and IoU threshold -> crossval name
    ("f1", 0.5): "f1_at_0.5",
    ("accuracy", 0.5): "accuracy_at_0.5",
    ("aji", None): "aji",
    ("accuracy_mean_over_thresholds", None): "accuracy_mean_0.5_0.95",
}


@dataclass(frozen=True)
class Job:
    """One training and evaluation: a config on one fold at one training-set size."""

    name: str
    config: RunConfig
    fold: int
    size: int | str
    split: Split

    @property
    def folder(self) -> str:
        size = "" if self.size == FULL else f"n{self.size}/"
        return f"{self.name}/{size}fold{self.fold}"


@dataclass(frozen=True)
class CrossvalResult:
    """What :func:`run_crossval` wrote: per-sample, per-fold, summary and comparison rows."""

    out: Path
    per_sample: list[dict[str, Any]]
    per_fold: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    comparison: list[dict[str, Any]]


# ---- folds and nested training subsets ---------------------------------------------------------


def config_names(paths: Sequence[str | Path]) -> list[str]:
    """A short name per config file (its stem); two configs with one name are an error."""
    names = [Path(p).name.split(".")[0] for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FluosegError(f"configs share the name(s) {duplicates}; results are filed by config file name, "
                           "so rename one of them")
    return names


def shared_folds(configs: Sequence[RunConfig], *, folds: int, seed: int) -> list[Split]:
    """The folds of the first config's samples, checked to be the samples of every config.

    Raises
    ------
    FluosegError
        If the configs' manifests hold different samples or groups, or ``folds`` is invalid.
    """
    manifests = [load_manifest(c.data.manifest) for c in configs]
    reference = {s.id: s.split_group for s in manifests[0].samples}
    for manifest in manifests[1:]:
        if {s.id: s.split_group for s in manifest.samples} != reference:
            raise FluosegError(f"this manifest's samples or groups differ from {manifests[0].path}; configs compared "
                               "by cross-validation must share their samples", path=manifest.path)
    return kfold_splits(manifests[0].samples, folds=folds, seed=seed)


def nested_subsets(train: Sequence[str], sizes: Sequence[int], *, seed: int, fold: int) -> dict[int, tuple[str, ...]]:
    """Nested training subsets: the first N of one seeded shuffle, for each N in ``sizes``.

    Raises
    ------
    FluosegError
        If a size exceeds the number of training samples.
    """
    order = [str(i) for i in np.random.default_rng([seed, fold]).permutation(sorted(train))]
    subsets = {}
    for size in sizes:
        if size > len(order):
            raise FluosegError(f"--train-sizes {size} exceeds the {len(order)} training samples of fold {fold}; "
                               "use smaller sizes or fewer folds")
        chosen = set(order[:size])
        subsets[size] = tuple(i for i in train if i in chosen)  # keep the split's order
    return subsets


def plan_jobs(names: Sequence[str], configs: Sequence[RunConfig], folds: Sequence[Split], *, seed: int,
              train_sizes: Sequence[int] | None) -> list[Job]:
    """Every (size, config, fold) job, sizes outermost so small sizes finish first."""
    sizes: list[int | str] = list(train_sizes) if train_sizes else [FULL]
    subsets = [nested_subsets(s.train, train_sizes, seed=seed, fold=k) if train_sizes else {}
               for k, s in enumerate(folds)]
    return [Job(name, config, k, size,
                split if size == FULL else Split(train=subsets[k][size], val=split.val, test=split.test))
            for size in sizes for name, config in zip(names, configs) for k, split in enumerate(folds)]


# ---- training, prediction and scoring of one job -------------------------------------------------


def _pixel_size(sample: Any, image: Any) -> tuple[float, ...] | None:
    size = sample.pixel_size or image.pixel_size
    if size is None:
        return None
    return tuple(size) * 2 if len(size) == 1 else tuple(size)


def training_finished(run_dir: Path, epochs: int) -> bool:
    """Whether every member network of a run logged its last epoch (``metrics.csv`` is written last)."""
    index = run_dir / "run.json"
    if not index.is_file():
        return False
    for member in json.loads(index.read_text())["members"]:
        metrics = run_dir / member / "metrics.csv"
        if not metrics.is_file():
            return False
        with metrics.open(newline="", encoding="utf-8") as handle:
            logged = [int(r["epoch"]) for r in csv.DictReader(handle)]
        if max(logged, default=0) < epochs:
            return False
    return True


def train_job(job: Job, run_dir: Path, *, progress: bool) -> None:
    """Train (or resume training) the job's networks; a finished run is left as it is."""
    from fluoseg.train.trainer import Trainer

    if training_finished(run_dir, job.config.train.epochs):
        return
    # A run killed before it wrote its member index restarts; any later point resumes.
    resume = (run_dir / "config.yaml").is_file() and (run_dir / "run.json").is_file()
    Trainer(job.config, run_dir, split=job.split, progress=progress).run(resume=resume, overwrite=not resume)


def score_job(job: Job, run_dir: Path, *, tta: bool,
              tile_size: int | None = None) -> tuple[list[dict[str, Any]], float]:
    """Predict the job's test samples with its best checkpoint and score them.

    Returns
    -------
    rows, seconds
        Rows ``{sample, metric, value}`` per test sample and pooled (``sample`` ``ALL``), and
        the prediction wall time in seconds (reading and scoring excluded).
    """
    from fluoseg.device import set_threads
    from fluoseg.infer import Segmenter

    set_threads(job.config.train.num_threads)
    segmenter = Segmenter.load(run_dir, device=job.config.train.device)
    task = segmenter.members[0].task
    manifest = load_manifest(job.config.data.manifest)
    tile = tile_size or job.config.train.val_tile_size
    diameter = "auto" if task.state().get("target_diameter") else None
    items, seconds = [], 0.0
    for sample_id in job.split.test:
        sample = manifest.sample(sample_id)
        image = sample.read_image()
        options = dict(pixel_size=_pixel_size(sample, image), tile_size=tile, tta=tta, source=str(sample.image_path))
        started = time.perf_counter()
        if segmenter.task_name == "instance":
            prediction, _ = segmenter.predict_labels(image.array, sample.channel_names, diameter=diameter, **options)
        else:
            prediction = np.asarray(segmenter.predict_probabilities(image.array, sample.channel_names, **options))
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


def _semantic_scores(items: list[tuple[str, Any, Any]], segmenter: Any) -> list[dict[str, Any]]:
    from fluoseg.metrics.semantic import semantic_rows

    rows = []
    tidy = semantic_rows([(n, p.astype(bool), t.astype(bool)) for n, p, t in items], class_names=segmenter.classes)
    for name in [n for n, _, _ in items] + [ALL]:
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
    task = segmenter.members[0].task
    rows, total = [], None
    for name, prediction, targets in items:
        counts = task.score_counts(prediction, targets)
        total = counts if total is None else total + counts
        rows += _regression_rows(name, task.score(counts))
    return rows + (_regression_rows(ALL, task.score(total)) if total is not None else [])


def _regression_rows(name: str, scores: dict[str, float]) -> list[dict[str, Any]]:
    return [{"sample": name, "metric": k, "value": float(v)} for k, v in scores.items() if k != "score"]


# ---- files ----------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV written by :func:`~fluoseg.io.write_csv_atomically`, with ``value`` as float."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [dict(row, value=float(row["value"])) if "value" in row else dict(row) for row in csv.DictReader(handle)]


def _claim(out: Path, names: Sequence[str], configs: Sequence[RunConfig], folds: Sequence[Split], seed: int) -> None:
    """Record the folds and configs, refusing an ``OUT`` made with other ones."""
    record = {"seed": seed, "folds": [{"train": list(s.train), "val": list(s.val), "test": list(s.test)}
                                      for s in folds]}
    path = out / "folds.json"
    if path.is_file():
        if json.loads(path.read_text()) != record:
            raise FluosegError("this folder holds folds made with another --folds, --seed or other samples; "
                               "use a new --out", path=out)
    else:
        write_text_atomically(path, json.dumps(record, indent=1))
    for name, config in zip(names, configs):
        stored = out / name / "config.yaml"
        resolved = config_to_dict(config)
        if stored.is_file():
            if yaml.safe_load(stored.read_text()) != resolved:
                raise FluosegError(f"config {name!r} differs from the one its folds were run with; "
                                   "give the new config another file name or use a new --out", path=stored)
        else:
            write_text_atomically(stored, yaml.safe_dump(resolved, sort_keys=False))


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


def compare(per_sample: Sequence[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Paired Wilcoxon tests of each config against each earlier config, per size and metric."""
    scores: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in per_sample:
        scores.setdefault((str(r["train_size"]), r["config"], r["metric"]), {})[r["sample"]] = float(r["value"])
    sizes = list(dict.fromkeys(str(r["train_size"]) for r in per_sample))
    metrics = list(dict.fromkeys(r["metric"] for r in per_sample))
    rows = []
    for size in sizes:
        for metric in metrics:
            for j, config in enumerate(names):
                for reference in names[:j]:
                    a, b = scores.get((size, config, metric), {}), scores.get((size, reference, metric), {})
                    units = [s for s in a if s in b and np.isfinite(a[s]) and np.isfinite(b[s])]
                    if not units:
                        continue
                    result = paired_wilcoxon([a[s] for s in units], [b[s] for s in units])
                    rows.append({"train_size": size, "metric": metric, "config": config, "reference": reference,
                                 "n": result.n, "mean_difference": result.mean_difference,
                                 "median_difference": result.median_difference, "statistic": result.statistic,
                                 "p_value": result.p_value, "significance": result.significance})
    return rows


def summary_markdown(summary: Sequence[dict[str, Any]], comparison: Sequence[dict[str, Any]], *,
                     names: Sequence[str], folds: int, tta: bool) -> str:
    """Readable tables: mean ± sd per config and metric, and the comparisons with the first config."""
    lines = [f"# Cross-validation ({folds} folds{', test-time augmentation' if tta else ''})", "",
             "Mean ± sd over folds of the scores pooled over each fold's test samples; "
             "comparisons: per-sample scores, two-sided Wilcoxon signed-rank test "
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
        versus = [r for r in comparison if r["train_size"] == size and r["reference"] == names[0]]
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


# ---- the whole run ----------------------------------------------------------------------------


def run_crossval(config_paths: Sequence[str | Path], out: str | Path, *, folds: int, seed: int = 0,
                 train_sizes: Sequence[int] | None = None, tta: bool = False, tile_size: int | None = None,
                 progress: bool = True, log: Callable[[str], None] = print) -> CrossvalResult:
    """Cross-validate configs on shared folds; resumable (see the module notes).

    Parameters
    ----------
    config_paths
        Run configurations (YAML) to compare; the first is the reference of the summary.
    out
        Output folder (layout in the module notes).
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
    configs = [load_config(p) for p in config_paths]
    if train_sizes is not None and (not train_sizes or any(int(n) < 1 for n in train_sizes)):
        raise FluosegError(f"--train-sizes must be positive integers, got {list(train_sizes)}")
    sizes = sorted({int(n) for n in train_sizes}) if train_sizes else None
    splits = shared_folds(configs, folds=folds, seed=seed)
    jobs = plan_jobs(names, configs, splits, seed=seed, train_sizes=sizes)
    _claim(out, names, configs, splits, seed)
    suffix = "_tta" if tta else ""
    per_sample: list[dict[str, Any]] = []
    per_fold: list[dict[str, Any]] = []
    for number, job in enumerate(jobs, start=1):
        folder = out / job.folder
        scores_path = folder / f"scores{suffix}.csv"
        where = f"[{number}/{len(jobs)}] {job.folder}"
        if not scores_path.is_file():
            run_dir = folder / "run"
            if training_finished(run_dir, job.config.train.epochs):
                log(f"{where}: trained before")
            else:
                log(f"{where}: training on {len(job.split.train)} samples (validation {len(job.split.val)})")
                train_job(job, run_dir, progress=progress)
            log(f"{where}: predicting {len(job.split.test)} test samples{' with TTA' if tta else ''}")
            rows, seconds = score_job(job, run_dir, tta=tta, tile_size=tile_size)
            write_text_atomically(folder / f"timing{suffix}.json", json.dumps(_timing(run_dir, seconds, len(job.split.test))))
            write_csv_atomically(scores_path, rows)  # written last: its presence marks the fold as done
        else:
            log(f"{where}: done before, skipped")
        for row in read_csv(scores_path):
            tagged = {"config": job.name, "train_size": job.size, "fold": job.fold, **row}
            (per_fold if row["sample"] == ALL else per_sample).append(tagged)
    summary = summarize(per_fold)
    comparison = compare(per_sample, names)
    write_csv_atomically(out / f"per_sample{suffix}.csv", per_sample)
    write_csv_atomically(out / f"per_fold{suffix}.csv", per_fold)
    write_csv_atomically(out / f"summary{suffix}.csv", summary)
    write_csv_atomically(out / f"comparison{suffix}.csv", comparison)
    write_text_atomically(out / f"summary{suffix}.md", summary_markdown(summary, comparison, names=names, folds=folds, tta=tta))
    log(f"summary: {out / f'summary{suffix}.md'}")
    return CrossvalResult(out=out, per_sample=per_sample, per_fold=per_fold, summary=summary, comparison=comparison)


def _timing(run_dir: Path, predict_seconds: float, n_test: int) -> dict[str, Any]:
    """Training wall time (summed epoch times, so resumed runs add up), parameters, prediction time."""
    from fluoseg.train.checkpoint import load_checkpoint

    members = json.loads((run_dir / "run.json").read_text())["members"]
    train_seconds, parameters = 0.0, 0
    for member in members:
        with (run_dir / member / "metrics.csv").open(newline="", encoding="utf-8") as handle:
            train_seconds += sum(float(r["seconds"]) for r in csv.DictReader(handle))
        state = load_checkpoint(run_dir / member / "best.pt")["model_state"]
        parameters += sum(int(v.numel()) for k, v in state.items() if v.is_floating_point() and "running_" not in k)
    return {"train_seconds": round(train_seconds, 2), "predict_seconds": round(predict_seconds, 3), "n_test": n_test,
            "parameters": parameters}


# ---- command line -----------------------------------------------------------------------------


def _sizes(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise FluosegError(f"--train-sizes takes comma-separated integers such as 1,10,50; got {text!r}") from None


def cmd_crossval(args: argparse.Namespace) -> int:
    """``fluoseg crossval``: see :func:`run_crossval`."""
    result = run_crossval(args.configs, args.out, folds=args.folds, seed=args.seed,
                          train_sizes=_sizes(args.train_sizes), tta=args.tta, tile_size=args.tile_size,
                          progress=not args.quiet)
    print((result.out / f"summary{'_tta' if args.tta else ''}.md").read_text())
    return 0


def add_crossval_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``crossval`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("crossval", help="k-fold cross-validation of one or more configs on the same folds",
                       description="Train every config on every fold (by sample/group, the same folds for all), "
                       "score the held-out samples, and compare the configs. Rerun to resume.")
    p.add_argument("configs", nargs="+", help="run configurations (YAML); the first is the reference")
    p.add_argument("--folds", type=int, required=True, help="number of folds")
    p.add_argument("--out", required=True, help="output folder (rerunning resumes it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and training subsets")
    p.add_argument("--train-sizes", help="training-set-size sweep, e.g. 1,10,50 (nested subsets per fold)")
    p.add_argument("--tta", action="store_true", help="predict with test-time augmentation (reuses trained folds)")
    p.add_argument("--tile-size", type=int, help="prediction tile size (default: train.val_tile_size, else 572)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_crossval)
    return p


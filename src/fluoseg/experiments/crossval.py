"""One k-fold cross-validation by sample for every comparison fluoseg makes.

Both ``fluoseg crossval A.yaml B.yaml`` (architectures, losses, ISL pretraining; per-sample
task metrics, paired comparisons) and ``fluoseg experiment crossval CONFIG`` (the MS-ME
paper's all-marker-combination evaluation) run :func:`run_crossval`; they differ only in
the :class:`Scorer` that scores a trained unit's test samples.

- **Folds** by sample or group (:func:`fluoseg.data.split.kfold_splits`, shuffled with
  ``seed``): every group is tested exactly once, the group after a fold's test groups
  validates, and the SAME folds serve every config (they must share their samples). MS-ME
  Methods: "4-fold cross-validation, by ensuring that all samples are once in test set and
  that the same sample folds are used for different methods". The configs' own
  ``data.split`` lists are ignored.
- **Training-set sizes** (``train_sizes``): each fold's training samples are shuffled once
  (seed ``(seed, fold)``) and the first N kept, so the sets are nested (N=1 ⊂ N=10 ⊂ N=50)
  and identical for every config; validation and test stay whole.
- **Heterogeneous panels** (``case``): the fold's training samples get the panels of one of
  the paper's Cases 1-6 (:mod:`.panels`), reshuffled per fold (seed ``case_seed + fold``);
  validation and test samples keep all their markers, as in the paper.

Layout of ``OUT`` (a rerun resumes: finished units are skipped, an interrupted training
resumes, and another scorer, e.g. with TTA, reuses the trained networks)::

    folds.json                                 the folds and settings (a rerun with others is refused)
    <name>/config.yaml                         the config as first run (a changed config is refused)
    <name>/[n<N>/]fold<k>/run/                 training run directory (+ trained.json when finished)
    <name>/[n<N>/]fold<k>/manifest.yaml, panels.json      with a case: the fold's training panels
    <name>/[n<N>/]fold<k>/<scorer files>       written last: their presence marks the unit as scored
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml

from fluoseg.config import RunConfig, config_to_dict
from fluoseg.data.manifest import load_manifest
from fluoseg.data.split import Split, kfold_splits
from fluoseg.errors import FluosegError
from fluoseg.experiments.panels import assign_case, panel_of, ub_ratio, write_manifest_with_available
from fluoseg.experiments.runs import check_record, split_record, train_unit
from fluoseg.io import write_json_atomically, write_text_atomically

FULL = "all"
"""``size`` of units trained on the whole training split (no size sweep)."""

Log = Callable[[str], None]


@dataclass(frozen=True)
class Unit:
    """One training and scoring: a config on one fold at one training-set size."""

    name: str
    config: RunConfig
    fold: int
    size: int | str
    split: Split

    @property
    def folder(self) -> str:
        size = "" if self.size == FULL else f"n{self.size}/"
        return f"{self.name}/{size}fold{self.fold}"


class Scorer(Protocol):
    """Scores the test samples of a trained unit; its files mark the unit as done."""

    def done(self, folder: Path) -> bool:
        """Whether the unit in ``folder`` was scored before (its result file exists)."""

    def score(self, unit: Unit, run_dir: Path, folder: Path, *, progress: bool) -> list[dict[str, Any]]:
        """Predict and score the unit's test samples; write the result file(s) into ``folder`` last."""

    def read(self, unit: Unit, folder: Path) -> list[dict[str, Any]]:
        """The rows of a scored unit, tagged with the unit."""


# ---- folds, units ---------------------------------------------------------------------------


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


def plan_units(names: Sequence[str], configs: Sequence[RunConfig], folds: Sequence[Split], *, seed: int,
               train_sizes: Sequence[int] | None = None) -> list[Unit]:
    """Every (size, config, fold) unit, sizes outermost so small sizes finish first."""
    sizes: list[int | str] = sorted({int(n) for n in train_sizes}) if train_sizes else [FULL]
    subsets = [nested_subsets(s.train, [int(n) for n in sizes], seed=seed, fold=k) if train_sizes else {}
               for k, s in enumerate(folds)]
    return [Unit(name, config, k, size,
                 split if size == FULL else Split(train=subsets[k][size], val=split.val, test=split.test))
            for size in sizes for name, config in zip(names, configs) for k, split in enumerate(folds)]


def case_config(unit: Unit, folder: Path, *, case: int, case_seed: int) -> tuple[RunConfig, dict[str, Any]]:
    """The unit's config with the case's heterogeneous panels on its training samples, and notes on them."""
    manifest = load_manifest(unit.config.data.manifest)
    markers = panel_of(unit.config, manifest).names
    channels = {s.id: s.usable_markers for s in manifest.samples}
    assignment = assign_case(case, list(unit.split.train), markers, seed=case_seed + unit.fold, channels=channels)
    config = unit.config.model_copy(deep=True)
    config.data.manifest = write_manifest_with_available(
        manifest.path, assignment, folder / "manifest.yaml", overwrite=True,
        comment=f"Case {case} panels of fold {unit.fold} (seed {case_seed + unit.fold})")
    n_ub, n_total = ub_ratio(assignment.values(), markers)
    return config, {"panels": {k: list(v) for k, v in assignment.items()}, "ub": n_ub, "total": n_total}


def _claim(out: Path, names: Sequence[str], configs: Sequence[RunConfig], folds: Sequence[Split],
           settings: dict[str, Any]) -> None:
    """Record the folds, settings and configs, refusing an ``OUT`` made with other ones."""
    record = {"folds": [split_record(s) for s in folds], **settings}
    if not check_record(out / "folds.json", record, what="this cross-validation"):
        write_json_atomically(out / "folds.json", record)
    for name, config in zip(names, configs):
        stored = out / name / "config.yaml"
        resolved = config_to_dict(config)
        if stored.is_file():
            if yaml.safe_load(stored.read_text(encoding="utf-8")) != resolved:
                raise FluosegError(f"config {name!r} differs from the one its folds were run with; "
                                   "give the new config another file name or use a new --out", path=stored)
        else:
            write_text_atomically(stored, yaml.safe_dump(resolved, sort_keys=False))


# ---- the run --------------------------------------------------------------------------------


def run_crossval(
    configs: dict[str, RunConfig],
    out: str | Path,
    scorer: Scorer,
    *,
    folds: int,
    seed: int = 0,
    train_sizes: Sequence[int] | None = None,
    case: int | None = None,
    case_seed: int = 0,
    progress: bool = True,
    log: Log = print,
) -> list[dict[str, Any]]:
    """Train every config on every fold (and training-set size) and score each unit; resumable.

    Parameters
    ----------
    configs
        Run configurations by name (the name files their results).
    out
        Output folder (layout in the module notes).
    scorer
        What a trained unit's test samples are scored with.
    folds
        Number of folds (2 to the number of sample groups).
    seed
        Seed of the fold shuffle and of the training subsets.
    train_sizes
        Training-set sizes of a sweep; ``None`` trains on each fold's whole training split.
    case, case_seed
        Heterogeneous training panels (Cases 1-6) and the seed of their shuffle.
    progress
        Show training and evaluation progress bars.
    log
        Receives one line per step.

    Returns
    -------
    list of dict
        The scorer's rows of every unit.
    """
    out = Path(out)
    names, config_list = list(configs), list(configs.values())
    splits = shared_folds(config_list, folds=folds, seed=seed)
    units = plan_units(names, config_list, splits, seed=seed, train_sizes=train_sizes)
    _claim(out, names, config_list, splits, {"seed": seed, "case": case, "case_seed": case_seed})
    rows: list[dict[str, Any]] = []
    for number, unit in enumerate(units, start=1):
        folder = out / unit.folder
        where = f"[{number}/{len(units)}] {unit.folder}"
        if scorer.done(folder):
            log(f"{where}: done before, skipped")
        else:
            config = unit.config
            if case is not None:
                config, notes = case_config(unit, folder, case=case, case_seed=case_seed)
                write_json_atomically(folder / "panels.json", notes)
                log(f"{where}: case {case} panels {notes['panels']}; |M^UB|/|M^total| = {notes['ub']}/{notes['total']}")
            log(f"{where}: training on {len(unit.split.train)} samples (validation {len(unit.split.val)}), "
                f"test {list(unit.split.test)}")
            train_unit(config, folder / "run", split=unit.split, progress=progress)
            log(f"{where}: scoring {len(unit.split.test)} test samples")
            scorer.score(unit, folder / "run", folder, progress=progress)
        rows.extend(scorer.read(unit, folder))
    return rows

"""Cross-validation by sample with the all-combination evaluation.

MS-ME Methods: "4-fold cross-validation, by ensuring that all samples are once in test
set and that the same sample folds are used for different methods in each experimental
setting". The folds come from :func:`fluoseg.data.split.kfold_splits` with the config's
``data.split.seed``, so every method run with the same seed gets the same folds; each
fold validates on the group after its test groups and trains on the rest.

With ``case`` the fold's training samples get the heterogeneous panels of that case
(:mod:`.panels`), reshuffled per fold (seed ``case_seed + fold``), while validation and
test samples keep all their markers, as in the paper.

Layout of ``OUT``: ``folds.json`` (the folds and settings; a rerun with other folds is
refused), ``fold<k>/`` per fold (``run/``, ``manifest.yaml`` with a case,
``samples/`` per-sample cache, ``combinations.csv`` when finished, so a rerun skips it),
and the merged ``combinations.csv`` / ``combinations_summary.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fluoseg.config import RunConfig
from fluoseg.data.manifest import load_manifest
from fluoseg.data.split import Split, kfold_splits
from fluoseg.experiments.combinations import evaluate_combinations
from fluoseg.experiments.panels import assign_case, ub_ratio, write_manifest_with_available
from fluoseg.experiments.results import read_results, write_csv, write_tables
from fluoseg.experiments.runs import check_record, fold_name, split_record, train_unit, write_json
from fluoseg.experiments.upper_bound import panel_of


def crossval_splits(config: RunConfig, folds: int) -> list[Split]:
    """The folds of a config's manifest (same for every method given the same split seed)."""
    manifest = load_manifest(config.data.manifest)
    return kfold_splits(manifest.samples, folds=folds, seed=config.data.split.seed)


def fold_config(config: RunConfig, split: Split, fold: int, fold_dir: Path, *, case: int | None, case_seed: int,
                epochs: int | None) -> tuple[RunConfig, dict[str, Any]]:
    """The config of one fold (with the case's panels on its training samples) and notes on it."""
    cfg = config.model_copy(deep=True)
    if epochs is not None:
        cfg.train.epochs = epochs
    notes: dict[str, Any] = {}
    if case is not None:
        manifest = load_manifest(config.data.manifest)
        markers = panel_of(config, manifest).names
        channels = {s.id: s.usable_markers for s in manifest.samples}
        assignment = assign_case(case, list(split.train), markers, seed=case_seed + fold, channels=channels)
        cfg.data.manifest = write_manifest_with_available(
            manifest.path, assignment, fold_dir / "manifest.yaml", overwrite=True,
            comment=f"Case {case} panels of fold {fold} (seed {case_seed + fold})")
        n_ub, n_total = ub_ratio(assignment.values(), markers)
        notes = {"panels": {k: list(v) for k, v in assignment.items()}, "ub": n_ub, "total": n_total}
    return cfg, notes


def run_crossval(config: RunConfig, out_dir: str | Path, *, folds: int = 4, method: str = "model",
                 case: int | None = None, case_seed: int = 0, epochs: int | None = None, tile_size: int | None = None,
                 batch_size: int = 1, progress: bool = True, log: Any = print) -> list[dict[str, Any]]:
    """Train a config once per fold and evaluate every marker combination of each fold's test samples.

    Parameters
    ----------
    config
        Run configuration (its ``data.split`` val/test lists are replaced by the folds).
    out_dir
        Output folder (layout in the module notes).
    folds
        Number of folds; every sample (group) is in exactly one fold's test split.
    method
        Method name in the results.
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
        Long-table rows of all folds (also written to ``OUT/combinations.csv``).
    """
    from fluoseg.infer import Segmenter  # deferred: loads torch

    out_dir = Path(out_dir)
    splits = crossval_splits(config, folds)
    settings = {"folds": [split_record(s) for s in splits], "case": case, "case_seed": case_seed}
    if not check_record(out_dir / "folds.json", settings, what="this cross-validation"):
        write_json(out_dir / "folds.json", settings)
    manifest = load_manifest(config.data.manifest)
    rows: list[dict[str, Any]] = []
    for fold, split in enumerate(splits):
        fold_dir = out_dir / fold_name(fold)
        done = fold_dir / "combinations.csv"
        if done.is_file():
            log(f"{method} fold {fold}: done, skipped")
            rows.extend({**row, "method": method} for row in read_results(done))
            continue
        cfg, notes = fold_config(config, split, fold, fold_dir, case=case, case_seed=case_seed, epochs=epochs)
        if notes:
            log(f"{method} fold {fold}: case {case} panels {notes['panels']}; "
                f"|M^UB|/|M^total| = {notes['ub']}/{notes['total']}")
            write_json(fold_dir / "panels.json", notes)
        log(f"{method} fold {fold}: train {list(split.train)}, val {list(split.val)}, test {list(split.test)}")
        train_unit(cfg, fold_dir / "run", split=split, progress=progress)
        segmenter = Segmenter.load(fold_dir / "run", device=cfg.train.device)
        fold_rows = evaluate_combinations(segmenter, [manifest.sample(i) for i in split.test], method=method,
                                          fold=fold, cache_dir=fold_dir / "samples", tile_size=tile_size,
                                          batch_size=batch_size, progress=progress)
        write_csv(fold_rows, done)
        rows.extend(fold_rows)
    write_tables(rows, out_dir)
    return rows

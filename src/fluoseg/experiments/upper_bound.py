"""The upper bound (UB): one network per marker combination, trained on that combination only.

MS-ME paper: "Q_phi_UB(m_G) [...] where phi_UB^{m_G} is a UNet model trained exclusively on
m_G", computable "only for marker combinations explicitly available in at least a sample",
i.e. for G in M^UB. Here, per cross-validation fold:

- G is trainable when at least one training sample has every marker of G
  (:attr:`Sample.usable_markers`); M^UB is the set of those, M^total = 2^K - 1 for the
  markers the training samples have (see :mod:`.panels`);
- the UB network of G is the config's network with Marker Zero input and no attention,
  trained and validated on the samples that have G, each showing only G: the samples get
  ``available: G`` in a copy of the manifest, so the other slots are zero and unavailable
  (functionally a network with |G| inputs; the unused slots only add a few first-layer
  weights that never receive a gradient);
- it is evaluated on the fold's test samples that have G, with markers G.

Layout of ``OUT``: ``fold<k>/<code>/`` per unit (``manifest.yaml``, ``run/``,
``combinations.csv`` when finished, so a rerun skips it), ``upper_bound.csv`` and
``upper_bound_summary.csv`` (results of all units) and ``trainable.csv`` (every combination
per fold: trainable, number of training samples, trained).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.config import RunConfig
from fluoseg.data.manifest import Manifest, load_manifest
from fluoseg.data.split import Split, kfold_splits, split_samples
from fluoseg.errors import FluosegError
from fluoseg.experiments.combinations import evaluate_combinations
from fluoseg.experiments.panels import panel_of, total_combinations, trainable_combinations, write_manifest_with_available
from fluoseg.experiments.results import read_results, write_csv, write_tables
from fluoseg.experiments.runs import fold_name, train_unit
from fluoseg.markers import MarkerPanel

UB_METHOD = "UB"
TRAINABLE_FIELDS = ("fold", "combination", "markers", "n_markers", "trainable", "n_train_samples", "trained")


@dataclass
class FoldPlan:
    """The UB work of one fold.

    Attributes
    ----------
    fold, split
        Fold number and its samples.
    trainable
        M^UB of the fold's training samples, in subset order.
    total
        |M^total|.
    chosen
        The trainable combinations to train (all, or the requested ones).
    train_counts
        Number of training samples that have each combination (0 if none).
    """

    fold: int
    split: Split
    trainable: list[tuple[str, ...]]
    total: int
    chosen: list[tuple[str, ...]]
    train_counts: dict[tuple[str, ...], int] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """|M^UB| / |M^total|."""
        return len(self.trainable) / self.total if self.total else float("nan")


def parse_combinations(spec: str | Sequence[str], panel: MarkerPanel) -> list[tuple[str, ...]]:
    """Marker subsets from the paper's codes (``"m_12,m_135"``: 1-based panel slots).

    Raises
    ------
    FluosegError
        For a malformed code or a slot beyond the panel.
    """
    codes = [c.strip() for c in spec.split(",")] if isinstance(spec, str) else [str(c).strip() for c in spec]
    subsets = []
    for code in filter(None, codes):
        digits = code[2:] if code.startswith("m_") else ""
        valid = digits.isdigit() and len(set(digits)) == len(digits)
        if not valid or any(not 1 <= int(d) <= len(panel) for d in digits):
            raise FluosegError(f"bad combination code {code!r}; write m_ followed by distinct marker slots "
                               f"1-{len(panel)} of {list(panel.names)}, e.g. m_12")
        subsets.append(tuple(panel.names[i] for i in sorted(int(d) - 1 for d in digits)))
    return list(dict.fromkeys(subsets))


def spread(items: Sequence[Any], count: int) -> list[Any]:
    """``count`` items evenly spaced over ``items`` (first and last included), in order.

    Over the subset order this takes single markers, pairs, ... and the full panel alike.
    """
    if count >= len(items):
        return list(items)
    if count <= 1:
        return list(items[-1:])
    picks = sorted({int(round(i)) for i in np.linspace(0, len(items) - 1, count)})
    return [items[i] for i in picks]


def fold_splits(config: RunConfig, manifest: Manifest, folds: int | None) -> list[Split]:
    """K folds by sample (``kfold_splits`` with the config's split seed), or the config's single split."""
    s = config.data.split
    if folds:
        return kfold_splits(manifest.samples, folds=folds, seed=s.seed)
    return [split_samples(manifest.samples, val=s.val, test=s.test, val_fraction=s.val_fraction,
                          test_fraction=s.test_fraction, seed=s.seed)]


def has_all(manifest: Manifest, sample_id: str, combination: Sequence[str]) -> bool:
    """Whether a sample has every marker of a combination."""
    return set(combination) <= set(manifest.sample(sample_id).usable_markers)


def plan_upper_bound(config: RunConfig, *, folds: int | None = None, combinations: str | Sequence[str] | None = None,
                     max_combinations: int | None = None) -> list[FoldPlan]:
    """Which combinations are trainable per fold and which of them to train."""
    manifest = load_manifest(config.data.manifest)
    panel = panel_of(config, manifest)
    requested = parse_combinations(combinations, panel) if combinations else None
    plans = []
    for fold, split in enumerate(fold_splits(config, manifest, folds)):
        panels = [[m for m in manifest.sample(i).usable_markers if m in panel.names] for i in split.train]
        trainable = trainable_combinations(panels, panel.names)
        counts = {g: sum(has_all(manifest, i, g) for i in split.train) for g in panel.subsets()}
        if requested is not None:
            chosen = [g for g in requested if g in trainable]
        elif max_combinations is not None:
            chosen = spread(trainable, max_combinations)
        else:
            chosen = trainable
        plans.append(FoldPlan(fold=fold, split=split, trainable=trainable, total=total_combinations(panels),
                              chosen=chosen, train_counts=counts))
    return plans


def ub_config(config: RunConfig, manifest: Path, *, epochs: int | None = None) -> RunConfig:
    """The config of a UB network: Marker Zero input, no attention, the given manifest, no extra samples."""
    from fluoseg.models.registry import MODELS  # deferred: loads torch

    ub = config.model_copy(deep=True)
    dropped = ("attention", "attention_options", "attention_at", "marker_input_options")
    options = {k: v for k, v in ub.model.options.items() if k not in dropped}
    if "marker_input" in MODELS.options(ub.model.name):
        options["marker_input"] = "mz"
    ub.model.options = options
    ub.data.manifest = manifest
    ub.data.extra_train = []
    if epochs is not None:
        ub.train.epochs = epochs
    return ub


def run_unit(config: RunConfig, manifest: Manifest, plan: FoldPlan, combination: tuple[str, ...], unit_dir: Path, *,
             method: str, epochs: int | None, tile_size: int | None, batch_size: int, progress: bool
             ) -> list[dict[str, Any]]:
    """Train and evaluate the UB network of one (combination, fold), unless already done."""
    from fluoseg.infer import Segmenter  # deferred: loads torch

    done = unit_dir / "combinations.csv"
    if done.is_file():
        return [{**row, "method": method} for row in read_results(done)]
    with_g = [s.id for s in manifest.samples if has_all(manifest, s.id, combination)]
    split = Split(train=tuple(i for i in plan.split.train if i in with_g),
                  val=tuple(i for i in plan.split.val if i in with_g),
                  test=tuple(i for i in plan.split.test if i in with_g))
    derived = write_manifest_with_available(manifest.path, {i: combination for i in with_g}, unit_dir / "manifest.yaml",
                                            overwrite=True, comment=f"Upper bound of {'+'.join(combination)}")
    unit_config = ub_config(config, derived, epochs=epochs)
    train_unit(unit_config, unit_dir / "run", split=split, progress=progress)
    segmenter = Segmenter.load(unit_dir / "run", device=unit_config.train.device)
    rows = evaluate_combinations(segmenter, [manifest.sample(i) for i in split.test], method=method, fold=plan.fold,
                                 only={combination}, cache_dir=unit_dir / "samples", tile_size=tile_size,
                                 batch_size=batch_size, progress=progress)
    write_csv(rows, done)
    return rows


def run_upper_bound(config: RunConfig, out_dir: str | Path, *, folds: int | None = None,
                    combinations: str | Sequence[str] | None = None, max_combinations: int | None = None,
                    epochs: int | None = None, method: str = UB_METHOD, tile_size: int | None = None,
                    batch_size: int = 1, progress: bool = True, log: Any = print
                    ) -> tuple[list[dict[str, Any]], list[FoldPlan]]:
    """Train and evaluate the UB networks; the work behind ``fluoseg experiment upper-bound``.

    Parameters
    ----------
    config
        Run configuration; its network (with Marker Zero and no attention) is the UB network.
    out_dir
        Output folder (layout in the module notes).
    folds
        Cross-validation folds by sample; ``None`` uses the config's split as fold 0.
    combinations, max_combinations
        Train only these codes (``"m_12,m_135"``), or at most this many trainable
        combinations spread over the subset order; default every trainable one.
    epochs
        Override ``train.epochs`` of the UB networks.
    method
        Method name in the results.
    log
        Where progress lines go.

    Returns
    -------
    rows, plans
        Long-table rows of every unit, and the per-fold plans (trainable sets, ratios).
    """
    out_dir = Path(out_dir)
    manifest = load_manifest(config.data.manifest)
    plans = plan_upper_bound(config, folds=folds, combinations=combinations, max_combinations=max_combinations)
    panel = panel_of(config, manifest)
    rows: list[dict[str, Any]] = []
    table = []
    for plan in plans:
        log(f"fold {plan.fold}: |M^UB|/|M^total| = {len(plan.trainable)}/{plan.total} = {plan.ratio:.2f}; "
            f"training {len(plan.chosen)} combination(s)")
        for g in panel.subsets():
            table.append({"fold": plan.fold, "combination": panel.subset_code(g), "markers": "+".join(g),
                          "n_markers": len(g), "trainable": int(g in plan.trainable),
                          "n_train_samples": plan.train_counts.get(g, 0), "trained": int(g in plan.chosen)})
        for g in plan.chosen:
            unit_dir = out_dir / fold_name(plan.fold) / panel.subset_code(g)
            rows.extend(run_unit(config, manifest, plan, g, unit_dir, method=method, epochs=epochs, tile_size=tile_size,
                                 batch_size=batch_size, progress=progress))
    write_csv(table, out_dir / "trainable.csv", TRAINABLE_FIELDS)
    if rows:
        write_tables(rows, out_dir, name="upper_bound")
    return rows, plans

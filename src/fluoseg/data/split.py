"""Train/validation/test splits and cross-validation folds, always by sample or group.

Patches of one sample are strongly correlated, so a split never separates them: the unit
assigned to a split is the sample's group (its id unless the manifest gives a group).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fluoseg.data.sample import Sample
from fluoseg.errors import FluosegError


@dataclass(frozen=True)
class Split:
    """Sample ids per role."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def _groups(samples: Sequence[Sample]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for sample in samples:
        groups.setdefault(sample.split_group, []).append(sample.id)
    return groups


def split_samples(
    samples: Sequence[Sample],
    *,
    val: Sequence[str] | None = None,
    test: Sequence[str] | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> Split:
    """Assign whole groups to train, validation and test.

    Parameters
    ----------
    samples
        All samples of the dataset.
    val, test
        Explicit sample or group ids for validation and test. When given, the fraction for
        that role is ignored.
    val_fraction, test_fraction
        Fraction of groups (rounded, at least one when the fraction is positive) drawn at
        random with ``seed`` for a role that is not given explicitly.
    seed
        Seed of the shuffle, so a split is reproducible.

    Raises
    ------
    FluosegError
        For an unknown id, an id in both val and test, or no training group left.
    """
    groups = _groups(samples)
    by_sample = {s.id: s.split_group for s in samples}

    def resolve(ids: Sequence[str], role: str) -> list[str]:
        chosen = []
        for name in ids:
            if name in groups:
                chosen.append(name)
            elif name in by_sample:
                chosen.append(by_sample[name])
            else:
                raise FluosegError(f"{role} id {name!r} is neither a sample nor a group id; known: {sorted(groups)}")
        return list(dict.fromkeys(chosen))

    rng = np.random.default_rng(seed)
    order = [str(g) for g in rng.permutation(sorted(groups))]
    roles: dict[str, list[str]] = {}
    for role, explicit, fraction in (("test", test, test_fraction), ("val", val, val_fraction)):
        if explicit is not None:
            roles[role] = resolve(explicit, role)
        else:
            taken = {g for r in roles.values() for g in r}
            free = [g for g in order if g not in taken]
            count = int(round(fraction * len(groups)))
            count = max(count, 1) if fraction > 0 and len(free) > 1 else count
            roles[role] = free[:count]
    overlap = set(roles["val"]) & set(roles["test"])
    if overlap:
        raise FluosegError(f"groups {sorted(overlap)} are in both the validation and the test split")
    held_out = set(roles["val"]) | set(roles["test"])
    train_groups = [g for g in sorted(groups) if g not in held_out]
    if not train_groups:
        raise FluosegError("no sample is left for training; make the validation/test split smaller")

    def ids(group_names: Sequence[str]) -> tuple[str, ...]:
        return tuple(i for g in group_names for i in groups[g])

    return Split(train=ids(train_groups), val=ids(roles["val"]), test=ids(roles["test"]))


def kfold_splits(samples: Sequence[Sample], *, folds: int, seed: int = 0, n_val: int = 1) -> list[Split]:
    """K-fold cross-validation by group: every group is in the test split exactly once.

    The validation groups of fold ``k`` are the ``n_val`` groups following its test groups
    (cyclically), so the same folds come out for every method given the same seed.
    """
    groups = _groups(samples)
    if folds < 2 or folds > len(groups):
        raise FluosegError(f"--folds must be between 2 and the number of groups ({len(groups)}), got {folds}")
    rng = np.random.default_rng(seed)
    order = [str(g) for g in rng.permutation(sorted(groups))]
    chunks = [list(c) for c in np.array_split(np.array(order, dtype=object), folds)]
    splits = []
    for k in range(folds):
        test = chunks[k]
        val = [g for j in range(1, folds) for g in chunks[(k + j) % folds]][:n_val]
        train = [g for g in order if g not in test and g not in val]
        if not train:
            raise FluosegError("too few groups for this many folds and validation groups")
        splits.append(
            Split(
                train=tuple(i for g in train for i in groups[g]),
                val=tuple(i for g in val for i in groups[g]),
                test=tuple(i for g in test for i in groups[g]),
            )
        )
    return splits

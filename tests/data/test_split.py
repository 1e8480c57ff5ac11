from pathlib import Path

import pytest

from fluoseg.data.sample import Sample
from fluoseg.data.split import kfold_splits, split_samples
from fluoseg.errors import FluosegError


def samples(n: int, groups: dict[int, str] | None = None) -> list[Sample]:
    groups = groups or {}
    return [Sample(id=f"s{i}", image_path=Path(f"s{i}.tif"), channel_names=("a",), group=groups.get(i, ""))
            for i in range(n)]


def test_explicit_split():
    split = split_samples(samples(5), val=["s1"], test=["s2", "s3"])
    assert split.val == ("s1",) and split.test == ("s2", "s3") and split.train == ("s0", "s4")


def test_groups_are_never_separated():
    data = samples(6, {0: "g", 1: "g", 2: "g"})
    for seed in range(10):
        split = split_samples(data, val_fraction=0.3, test_fraction=0.3, seed=seed)
        roles = [r for r in (split.train, split.val, split.test) if "s0" in r]
        assert len(roles) == 1 and {"s1", "s2"} <= set(roles[0])


def test_fraction_split_is_reproducible_and_disjoint():
    a = split_samples(samples(10), val_fraction=0.2, test_fraction=0.2, seed=3)
    b = split_samples(samples(10), val_fraction=0.2, test_fraction=0.2, seed=3)
    assert a == b
    assert len(a.val) == 2 and len(a.test) == 2
    assert not set(a.train) & set(a.val) and not set(a.val) & set(a.test) and not set(a.train) & set(a.test)
    assert sorted(a.train + a.val + a.test) == sorted(f"s{i}" for i in range(10))


def test_group_id_selects_whole_group():
    split = split_samples(samples(4, {0: "g", 1: "g"}), val=["g"])
    assert split.val == ("s0", "s1")


def test_unknown_and_conflicting_ids():
    with pytest.raises(FluosegError, match="neither a sample nor a group"):
        split_samples(samples(3), val=["x"])
    with pytest.raises(FluosegError, match="both"):
        split_samples(samples(3), val=["s1"], test=["s1"])
    with pytest.raises(FluosegError, match="no sample is left"):
        split_samples(samples(2), val=["s0"], test=["s1"])


def test_kfold_every_sample_tested_once():
    data = samples(8)
    folds = kfold_splits(data, folds=4, seed=1)
    tested = [i for f in folds for i in f.test]
    assert sorted(tested) == sorted(s.id for s in data)
    for fold in folds:
        assert not set(fold.train) & set(fold.test) and not set(fold.val) & set(fold.test)
        assert len(fold.val) == 1
    assert kfold_splits(data, folds=4, seed=1) == folds


def test_kfold_bounds():
    with pytest.raises(FluosegError, match="--folds"):
        kfold_splits(samples(3), folds=4)


def test_kfold_keeps_groups_whole():
    data = samples(9, {0: "g", 1: "g", 2: "g", 3: "h", 4: "h"})
    whole = ({"s0", "s1", "s2"}, {"s3", "s4"})
    for seed in range(5):
        folds = kfold_splits(data, folds=3, seed=seed)
        for fold in folds:
            assert not set(fold.train) & set(fold.val)
            assert sorted(fold.train + fold.val + fold.test) == sorted(f"s{i}" for i in range(9))
            for group in whole:
                roles = [set(r) & group for r in (fold.train, fold.val, fold.test)]
                assert sum(bool(r) for r in roles) == 1 and group in roles  # one role holds the whole group
        for group in whole:  # no group is tested in two folds: it is tested, whole, in exactly one
            assert [group <= set(fold.test) for fold in folds].count(True) == 1


@pytest.mark.parametrize("seed", range(6))
def test_fraction_split_with_groups_never_shares_a_group_between_train_and_test(seed):
    groups = {i: f"g{i // 3}" for i in range(12)}  # four groups of three samples
    split = split_samples(samples(12, groups), val_fraction=0.25, test_fraction=0.25, seed=seed)
    assert not set(split.train) & set(split.test) and not set(split.train) & set(split.val)
    assert not set(split.val) & set(split.test)
    assert sorted(split.train + split.val + split.test) == sorted(f"s{i}" for i in range(12))
    group_of = {f"s{i}": g for i, g in groups.items()}
    train_groups = {group_of[i] for i in split.train}
    assert not train_groups & {group_of[i] for i in split.test}
    assert not train_groups & {group_of[i] for i in split.val}
    assert len(split.test) == 3 and len(split.val) == 3  # one whole group each

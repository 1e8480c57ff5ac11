"""Tests of fluoseg.models.detection.sampling: Matcher semantics and balanced sampling."""

from __future__ import annotations

import pytest
import torch

from fluoseg.models.detection.sampling import (
    BELOW_LOW_THRESHOLD,
    BETWEEN_THRESHOLDS,
    BalancedPositiveNegativeSampler,
    Matcher,
)


def test_matcher_thresholds():
    quality = torch.tensor([[0.9, 0.5, 0.1, 0.31], [0.2, 0.6, 0.05, 0.0]])
    matches = Matcher(0.7, 0.3)(quality)
    # 0.9 -> truth 0; best 0.6 between -> ignored; best 0.1 -> background; 0.31 between.
    assert matches.tolist() == [0, BETWEEN_THRESHOLDS, BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS]


def test_matcher_low_quality_matches_keep_each_truths_best_predictions():
    quality = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.0, 0.4, 0.4, 0.2]])
    plain = Matcher(0.7, 0.3)(quality)
    assert plain.tolist() == [0, BETWEEN_THRESHOLDS, BETWEEN_THRESHOLDS, BELOW_LOW_THRESHOLD]
    low = Matcher(0.7, 0.3, allow_low_quality_matches=True)(quality)
    # Truth 1's best quality 0.4 is reached by predictions 1 and 2 (a tie): both matched.
    assert low.tolist() == [0, 1, 1, BELOW_LOW_THRESHOLD]


def test_matcher_high_equals_low_has_no_ignored_band():
    matches = Matcher(0.5, 0.5)(torch.tensor([[0.49, 0.5, 0.51]]))
    assert matches.tolist() == [BELOW_LOW_THRESHOLD, 0, 0]


def test_matcher_refuses_empty():
    with pytest.raises(ValueError, match="ground-truth"):
        Matcher(0.5, 0.5)(torch.zeros((0, 3)))


def test_sampler_counts_and_fill_with_negatives():
    labels = torch.tensor([1] * 10 + [0] * 100 + [-1] * 5)
    sampler = BalancedPositiveNegativeSampler(32, 0.25)
    positives, negatives = sampler([labels, torch.tensor([2, 0, 0, -1])], generator=torch.Generator().manual_seed(0))
    assert positives[0].sum() == 8 and negatives[0].sum() == 24
    assert bool(labels[positives[0]].ge(1).all()) and bool(labels[negatives[0]].eq(0).all())
    # Few candidates: everything usable is taken, ignored ones never.
    assert positives[1].tolist() == [True, False, False, False]
    assert negatives[1].tolist() == [False, True, True, False]


def test_sampler_positives_short_means_more_negatives():
    labels = torch.tensor([1] * 3 + [0] * 100)
    positives, negatives = BalancedPositiveNegativeSampler(20, 0.5)([labels])
    assert positives[0].sum() == 3 and negatives[0].sum() == 17

"""Ratios of detection counts shared by the pixel and object metrics.

One convention everywhere: a ratio whose denominator is 0 is 1.0 when truth and prediction
are both empty (nothing to find, nothing found: perfect) and 0.0 otherwise.
"""

from __future__ import annotations


def safe_ratio(numerator: float, denominator: float, *, both_empty: bool) -> float:
    """``numerator / denominator`` with the empty-case convention of this package."""
    if denominator == 0:
        return 1.0 if both_empty else 0.0
    return float(numerator / denominator)


class ObjectCountScores:
    """Mixin for count records with ``n_true``, ``n_pred`` and ``tp`` (one-to-one pairs).

    Derives ``fp = n_pred - tp``, ``fn = n_true - tp``, precision, recall and F1 with the
    empty-case convention of :func:`safe_ratio`.
    """

    n_true: int
    n_pred: int
    tp: int

    @property
    def fp(self) -> int:
        """Predictions not paired with a truth object, ``n_pred - tp``."""
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        """Truth objects not paired with a prediction, ``n_true - tp``."""
        return self.n_true - self.tp

    @property
    def _empty(self) -> bool:
        return self.n_true == 0 and self.n_pred == 0

    @property
    def precision(self) -> float:
        """``tp / (tp + fp)``."""
        return safe_ratio(self.tp, self.n_pred, both_empty=self._empty)

    @property
    def recall(self) -> float:
        """``tp / (tp + fn)``."""
        return safe_ratio(self.tp, self.n_true, both_empty=self._empty)

    @property
    def f1(self) -> float:
        """``2 tp / (2 tp + fp + fn)``; for matchings also the recognition quality RQ of PQ."""
        return safe_ratio(2 * self.tp, self.n_true + self.n_pred, both_empty=self._empty)

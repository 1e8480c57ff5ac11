"""Segmentation losses of the transfer-learning study and their relatives, built by name.

The study fine-tuned its encoder networks with BCE-with-logits (positive weight 9), Dice
(epsilon 1) and their sum, "BCE with Dice" (its equations 1-3). Jaccard (soft IoU) and
focal loss complete the set. :func:`build_loss` builds them from the config:

========== ===================== ==============================================
name       class                 typical options
========== ===================== ==============================================
``bce``    :class:`BCEWithLogits` ``pos_weight: 9``
``dice``   :class:`DiceLoss`      ``eps: 1.0``, ``mode: sigmoid|softmax``
``bce-dice`` :class:`BCEDiceLoss` ``bce_weight: 1``, ``dice_weight: 1``
``jaccard`` :class:`JaccardLoss`  ``eps: 1.0``, ``mode``
``focal``  :class:`FocalLoss`     ``gamma: 2``, ``alpha: 0.25``
========== ===================== ==============================================

Conventions shared by all of them, ``loss(logits, target, valid=None) -> scalar``:

- ``logits`` ``(N, C, H, W)``, raw network outputs (Dice/Jaccard also take
  probabilities with ``from_logits=False``).
- ``mode="sigmoid"`` (BCE always): one independent binary problem per channel; ``target``
  has the logits' shape with 0/1 values (``(N, H, W)`` is accepted when C is 1).
- ``mode="softmax"``: mutually exclusive classes; ``target`` ``(N, H, W)`` holds class
  indices ``0..C-1``.
- Excluded pixels: target value ``ignore_index`` (-1, fluoseg's outside-the-image label,
  :data:`fluoseg.tasks.base.IGNORE_INDEX`), and pixels where the optional ``valid`` mask
  ``(N, [1|C,] H, W)`` is 0. They contribute nothing to the value or the gradient.
- ``logits`` may be a list of tensors (U-Net++ deep supervision): the loss is the mean of
  the per-output losses. :class:`DeepSupervisionLoss` does the same for any other loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fluoseg.errors import FluosegError
from fluoseg.models.registry import Registry
from fluoseg.tasks.base import IGNORE_INDEX

T = TypeVar("T", bound=type)

MODES = ("sigmoid", "softmax")

LOSSES: Registry[type[nn.Module]] = Registry("loss")


def register_loss(name: str) -> Callable[[T], T]:
    """Class decorator making a loss buildable by ``name`` with :func:`build_loss`."""
    return LOSSES.register(name)


def build_loss(name: str, **options: Any) -> nn.Module:
    """Build the loss registered as ``name`` (``bce``, ``dice``, ``bce-dice``, ``jaccard``, ``focal``).

    Raises
    ------
    FluosegError
        For an unknown name, an unknown option or an invalid option value.
    """
    return LOSSES.build(name, **options)


def loss_names() -> list[str]:
    """Names of the registered losses, sorted."""
    return LOSSES.names()


# ------------------------------------------------------------------------------ option checks


def _number(loss: str, name: str, value: Any, *, minimum: float, inclusive: bool = True) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    ok = ok and (value >= minimum if inclusive else value > minimum)
    if not ok:
        bound = f">= {minimum}" if inclusive else f"> {minimum}"
        raise FluosegError(f"{loss} loss option {name!r} must be a number {bound}, got {value!r}")
    return float(value)


def _mode(loss: str, value: Any) -> str:
    if value not in MODES:
        raise FluosegError(f"{loss} loss option 'mode' must be one of {list(MODES)}, got {value!r}")
    return value


def _weights(loss: str, name: str, value: Any) -> Tensor | None:
    """``None``, a positive number, or a list of positive numbers (one per channel/class)."""
    if value is None:
        return None
    values = [value] if not isinstance(value, Sequence) or isinstance(value, str) else list(value)
    if not values:
        raise FluosegError(f"{loss} loss option {name!r} must be a positive number or a list of them, got {value!r}")
    numbers = [_number(loss, name, v, minimum=0.0, inclusive=False) for v in values]
    tensor = torch.tensor(numbers, dtype=torch.float32)
    return tensor[0] if not isinstance(value, Sequence) else tensor


# ------------------------------------------------------------------------------ targets and masks


def _valid_mask(valid: Tensor | None, like: Tensor) -> Tensor:
    """``valid`` as 0/1 of ``like``'s dtype, broadcastable to ``like`` (N, C, H, W)."""
    if valid is None:
        return torch.ones((), dtype=like.dtype, device=like.device)
    if valid.ndim == like.ndim - 1:
        valid = valid.unsqueeze(1)
    if valid.ndim != like.ndim:
        raise ValueError(f"valid mask of shape {tuple(valid.shape)} does not fit logits {tuple(like.shape)}")
    return (valid > 0).to(like.dtype)


def binary_targets(
    logits: Tensor, target: Tensor, valid: Tensor | None, ignore_index: int | None
) -> tuple[Tensor, Tensor]:
    """0/1 targets and a 0/1 weight per element for per-channel (sigmoid) losses.

    Returns
    -------
    tuple of Tensor
        Targets and mask, both of the logits' shape; ignored elements have target 0 and
        mask 0.
    """
    if target.ndim == logits.ndim - 1 and logits.shape[1] == 1:
        target = target.unsqueeze(1)
    if target.shape != logits.shape:
        raise ValueError(
            f"sigmoid-mode target must have the logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    mask = _valid_mask(valid, logits).expand_as(logits)
    if ignore_index is not None:
        mask = mask * (target != ignore_index).to(logits.dtype)
    target = torch.where(mask > 0, target.to(logits.dtype), torch.zeros((), dtype=logits.dtype, device=logits.device))
    return target, mask


def class_targets(
    logits: Tensor, target: Tensor, valid: Tensor | None, ignore_index: int | None
) -> tuple[Tensor, Tensor]:
    """Class indices and a 0/1 weight per pixel for softmax losses.

    Returns
    -------
    tuple of Tensor
        ``(N, H, W)`` long indices (0 where ignored) and ``(N, 1, H, W)`` mask.
    """
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"softmax-mode target must be (N, H, W) class indices for logits {tuple(logits.shape)}, "
                         f"got {tuple(target.shape)}")
    target = target.long()
    mask = _valid_mask(valid, logits[:, :1]).expand(logits.shape[0], 1, *logits.shape[2:])
    if ignore_index is not None:
        mask = mask * (target != ignore_index).unsqueeze(1).to(logits.dtype)
    target = torch.where(mask[:, 0] > 0, target, torch.zeros_like(target))
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValueError(f"class indices must lie in [0, {logits.shape[1]}) or be ignore_index")
    return target, mask


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    # An all-ignored batch gives 0 (with a zero gradient), not NaN.
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


# ------------------------------------------------------------------------------------ losses


class SegmentationLoss(nn.Module):
    """Base class: ``forward(logits | list of logits, target, valid=None) -> scalar``.

    Subclasses implement :meth:`compute` for one tensor of logits; a list (deep
    supervision) is scored output by output and averaged.
    """

    def forward(self, logits: Tensor | Sequence[Tensor], target: Tensor, valid: Tensor | None = None) -> Tensor:
        if isinstance(logits, (list, tuple)):
            if not logits:
                raise ValueError("expected at least one tensor of logits")
            return torch.stack([self.compute(output, target, valid) for output in logits]).mean()
        return self.compute(logits, target, valid)

    def compute(self, logits: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:  # pragma: no cover
        """The loss of one ``(N, C, H, W)`` tensor of logits."""
        raise NotImplementedError


@register_loss("bce")
class BCEWithLogits(SegmentationLoss):
    """Binary cross-entropy on logits, per channel, averaged over the non-ignored elements.

    Study, eq. 1: ``-mean(rho * M log sigma(x) + (1 - M) log(1 - sigma(x)))`` with the
    positive weight rho (9 in the study) countering the rarity of foreground pixels.

    Parameters
    ----------
    pos_weight
        Weight of positive targets: a number, or one per channel; ``None`` for 1.
    ignore_index
        Target value of excluded elements (``None``: none).
    """

    def __init__(self, *, pos_weight: float | Sequence[float] | None = None, ignore_index: int | None = IGNORE_INDEX):
        super().__init__()
        weight = _weights("bce", "pos_weight", pos_weight)
        self.ignore_index = ignore_index
        # A per-channel weight must broadcast over (N, C, H, W).
        if weight is not None and weight.ndim:
            weight = weight.reshape(-1, 1, 1)
        self.register_buffer("pos_weight", weight)

    def compute(self, logits: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
        target, mask = binary_targets(logits, target, valid, self.ignore_index)
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.dtype)
        per_element = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
        return _masked_mean(per_element, mask)


class _OverlapLoss(SegmentationLoss):
    """Shared code of the soft Dice and Jaccard losses."""

    name = "overlap"

    def __init__(
        self,
        *,
        eps: float = 1.0,
        from_logits: bool = True,
        mode: str = "sigmoid",
        batch_dice: bool = False,
        include_background: bool = True,
        ignore_index: int | None = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.eps = _number(self.name, "eps", eps, minimum=0.0, inclusive=False)
        self.mode = _mode(self.name, mode)
        for option, value in (("from_logits", from_logits), ("batch_dice", batch_dice),
                              ("include_background", include_background)):
            if not isinstance(value, bool):
                raise FluosegError(f"{self.name} loss option {option!r} must be true or false, got {value!r}")
        if not include_background and self.mode != "softmax":
            raise FluosegError(f"{self.name} loss option 'include_background: false' needs mode 'softmax' "
                               "(channel 0 is background only there)")
        self.from_logits = from_logits
        self.batch_dice = batch_dice
        self.include_background = include_background
        self.ignore_index = ignore_index

    def sums(self, logits: Tensor, target: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Soft intersection, prediction sum and target sum per image and channel (or channel)."""
        if self.mode == "sigmoid":
            truth, mask = binary_targets(logits, target, valid, self.ignore_index)
            probabilities = torch.sigmoid(logits) if self.from_logits else logits
        else:
            indices, mask = class_targets(logits, target, valid, self.ignore_index)
            truth = F.one_hot(indices, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
            probabilities = torch.softmax(logits, dim=1) if self.from_logits else logits
        probabilities = probabilities * mask
        truth = truth * mask
        if not self.include_background:
            probabilities, truth = probabilities[:, 1:], truth[:, 1:]
        dims = (0, 2, 3) if self.batch_dice else (2, 3)
        return (probabilities * truth).sum(dims), probabilities.sum(dims), truth.sum(dims)


@register_loss("dice")
class DiceLoss(_OverlapLoss):
    """Soft Dice loss ``1 - (2 |P*T| + eps) / (|P| + |T| + eps)``, averaged.

    Study, eq. 2 (eps = 1): computed per image and channel and averaged, so that an image
    with little foreground counts as much as one with much. With ``batch_dice`` the sums
    run over the whole batch per channel (segmentation-models-pytorch's default), which is
    steadier when many patches are empty.

    Parameters
    ----------
    eps
        Smoothing added to numerator and denominator (> 0): an empty target predicted
        empty scores 0 loss, and gradients stay finite.
    from_logits
        Apply the sigmoid/softmax (default); ``False`` if the inputs are probabilities.
    mode
        ``"sigmoid"`` (per channel, 0/1 targets) or ``"softmax"`` (class-index targets).
    batch_dice
        Sum over the batch before the ratio instead of per image.
    include_background
        With ``mode="softmax"``, whether channel 0 (background) counts.
    ignore_index
        Target value of excluded pixels (``None``: none).
    """

    name = "dice"

    def compute(self, logits: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
        intersection, predicted, truth = self.sums(logits, target, valid)
        return (1.0 - (2.0 * intersection + self.eps) / (predicted + truth + self.eps)).mean()


@register_loss("jaccard")
class JaccardLoss(_OverlapLoss):
    """Soft Jaccard (IoU) loss ``1 - (|P*T| + eps) / (|P| + |T| - |P*T| + eps)``, averaged.

    Options as :class:`DiceLoss` (``batch_dice`` sums over the batch here too).
    """

    name = "jaccard"

    def compute(self, logits: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
        intersection, predicted, truth = self.sums(logits, target, valid)
        return (1.0 - (intersection + self.eps) / (predicted + truth - intersection + self.eps)).mean()


@register_loss("bce-dice")
class BCEDiceLoss(SegmentationLoss):
    """``bce_weight * BCE + dice_weight * Dice`` (study, eq. 3, with both weights 1).

    With ``mode="softmax"`` the cross-entropy term is the categorical cross-entropy
    (class-index targets), the multi-class form of BCE.

    Parameters
    ----------
    bce_weight, dice_weight
        Non-negative weights of the two terms.
    pos_weight
        BCE positive weight (sigmoid mode only).
    eps, batch_dice, mode, include_background
        Dice options (see :class:`DiceLoss`).
    ignore_index
        Target value of excluded pixels, for both terms.
    """

    def __init__(
        self,
        *,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        pos_weight: float | Sequence[float] | None = None,
        eps: float = 1.0,
        batch_dice: bool = False,
        mode: str = "sigmoid",
        include_background: bool = True,
        ignore_index: int | None = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.bce_weight = _number("bce-dice", "bce_weight", bce_weight, minimum=0.0)
        self.dice_weight = _number("bce-dice", "dice_weight", dice_weight, minimum=0.0)
        self.mode = _mode("bce-dice", mode)
        if self.mode == "softmax" and pos_weight is not None:
            raise FluosegError("bce-dice loss option 'pos_weight' applies to mode 'sigmoid' only")
        self.ignore_index = ignore_index
        self.bce = BCEWithLogits(pos_weight=pos_weight, ignore_index=ignore_index)
        self.dice = DiceLoss(eps=eps, mode=mode, batch_dice=batch_dice, include_background=include_background,
                             ignore_index=ignore_index)

    def compute(self, logits: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
        if self.mode == "sigmoid":
            cross_entropy = self.bce.compute(logits, target, valid)
        else:
            indices, mask = class_targets(logits, target, valid, self.ignore_index)
            per_pixel = F.cross_entropy(logits, indices, reduction="none")
            cross_entropy = _masked_mean(per_pixel, mask[:, 0])
        return self.bce_weight * cross_entropy + self.dice_weight * self.dice.compute(logits, target, valid)


@register_loss("focal")
class FocalLoss(SegmentationLoss):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_t)**gamma``.

    Well-classified pixels (p_t near 1) contribute little, so training concentrates on the
    hard ones. Averaged over the non-ignored elements (sigmoid) or pixels (softmax).

    Parameters
    ----------
    gamma
        Focusing exponent (>= 0; 0 is plain cross-entropy).
    alpha
        Sigmoid mode: weight of positives in [0, 1] (negatives get ``1 - alpha``; 0.25 in
        Lin et al.). Softmax mode: a list of per-class weights. ``None``: no weighting.
    mode
        ``"sigmoid"`` or ``"softmax"``.
    ignore_index
        Target value of excluded pixels (``None``: none).
    """

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        mode: str = "sigmoid",
        ignore_index: int | None = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.gamma = _number("focal", "gamma", gamma, minimum=0.0)
        self.mode = _mode("focal", mode)
        self.ignore_index = ignore_index
        alpha_tensor: Tensor | None = None
        if alpha is not None:
            if self.mode == "sigmoid":
                value = _number("focal", "alpha", alpha, minimum=0.0) if not isinstance(alpha, Sequence) else -1.0
                if not 0.0 <= value <= 1.0:
                    raise FluosegError(
                        f"focal loss option 'alpha' must be a number in [0, 1] in sigmoid mode, got {alpha!r}"
                    )
                alpha_tensor = torch.tensor(value)
            else:
                if isinstance(alpha, str) or not isinstance(alpha, Sequence):
                    raise FluosegError(
                        f"focal loss option 'alpha' must be a list of class weights in softmax mode, got {alpha!r}"
                    )
                alpha_tensor = _weights("focal", "alpha", alpha)
        self.register_buffer("alpha", alpha_tensor)

    def compute(self, logits: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
        if self.mode == "sigmoid":
            truth, mask = binary_targets(logits, target, valid, self.ignore_index)
            cross_entropy = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
            p_t = torch.exp(-cross_entropy)  # the probability given to the true label
            loss = cross_entropy * (1.0 - p_t) ** self.gamma
            if self.alpha is not None:
                alpha = self.alpha.to(logits.dtype)
                loss = loss * (alpha * truth + (1.0 - alpha) * (1.0 - truth))
            return _masked_mean(loss, mask)
        indices, mask = class_targets(logits, target, valid, self.ignore_index)
        log_p_t = torch.log_softmax(logits, dim=1).gather(1, indices.unsqueeze(1))
        loss = -((1.0 - log_p_t.exp()) ** self.gamma) * log_p_t
        if self.alpha is not None:
            if self.alpha.numel() != logits.shape[1]:
                raise ValueError(f"focal alpha has {self.alpha.numel()} class weights for {logits.shape[1]} classes")
            loss = loss * self.alpha.to(logits.dtype)[indices].unsqueeze(1)
        return _masked_mean(loss, mask)


class DeepSupervisionLoss(nn.Module):
    """Any loss applied to each output of a deep-supervised network, then averaged.

    Zhou et al. (U-Net++) train with the loss of every output head, equally weighted. A
    single tensor passes straight to ``loss``.

    Parameters
    ----------
    loss
        Callable ``loss(logits, target) -> scalar`` (e.g. the MS-ME weighted
        cross-entropy).
    weights
        One non-negative weight per output (normalised to sum 1); default equal.
    """

    def __init__(self, loss: Callable[..., Tensor], *, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = (
            None if weights is None else [_number("deep supervision", "weights", w, minimum=0.0) for w in weights]
        )

    def forward(self, logits: Tensor | Sequence[Tensor], target: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if not isinstance(logits, (list, tuple)):
            return self.loss(logits, target, *args, **kwargs)
        losses = torch.stack([self.loss(output, target, *args, **kwargs) for output in logits])
        if self.weights is None:
            return losses.mean()
        if len(self.weights) != len(losses) or sum(self.weights) <= 0:
            raise ValueError(f"{len(self.weights)} deep-supervision weights for {len(losses)} outputs")
        weights = torch.tensor(self.weights, dtype=losses.dtype, device=losses.device)
        return (losses * weights).sum() / weights.sum()

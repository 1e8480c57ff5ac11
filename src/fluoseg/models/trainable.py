"""Which parameters a fine-tuning run trains: all, the marker-conditioning layers, or the head.

The MS-ME paper proposes, as future work, adapting a trained MS-ME network to new tissue
by "fine-tuning only the few parameters in the ME module as opposed to expensive,
classical fine-tuning strategies". The scopes here make that a config choice
(``model.trainable``):

- ``"all"``: every parameter (classical fine-tuning, or training from scratch);
- ``"excite"``: the marker-conditioning layers only: Marker Excite and
  Squeeze-and-Excitation attention modules, the marker input layer (its parameters, if
  it has any) and the channel-invariant front end's marker embedding. For the MS-ME
  U-Net this is ~0.6 % of the parameters;
- ``"head"``: the convolution(s) producing the logits (``model.output_layers()``).

Scopes combine with ``+`` (``"excite+head"``). :func:`freeze_except` switches
``requires_grad`` accordingly; :func:`eval_frozen_normalization` keeps the running
statistics of frozen batch-normalisation layers fixed during training.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from fluoseg.errors import FluosegError
from fluoseg.models.attention import MarkerExcite, SqueezeExcitation
from fluoseg.models.channel_invariant import MarkerEmbedding
from fluoseg.models.marker_input import MarkerInput

__all__ = ["TRAINABLE_SCOPES", "eval_frozen_normalization", "freeze_except", "trainable_parameters"]

_EXCITE_TYPES = (MarkerExcite, SqueezeExcitation, MarkerInput, MarkerEmbedding)


def _everything(model: nn.Module) -> list[nn.Module]:
    return [model]


def _excite(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, _EXCITE_TYPES)]


def _head(model: nn.Module) -> list[nn.Module]:
    output_layers = getattr(model, "output_layers", None)
    if output_layers is None:
        raise FluosegError(f"{type(model).__name__} does not say which layers are its head; "
                           "use trainable scope 'all' or 'excite'")
    return list(output_layers())


TRAINABLE_SCOPES: dict[str, Callable[[nn.Module], list[nn.Module]]] = {
    "all": _everything,
    "excite": _excite,
    "head": _head,
}
"""Scope name -> the modules whose parameters it trains."""

_DESCRIPTIONS = {
    "all": "every parameter",
    "excite": "Marker Excite/SE attention, marker input layer or marker embedding parameters",
    "head": "output layer parameters",
}


def _scope_modules(model: nn.Module, scope: str) -> list[nn.Module]:
    """Modules selected by a scope such as ``"excite+head"`` (validated)."""
    parts = [part.strip() for part in str(scope).split("+")] if isinstance(scope, str) else [repr(scope)]
    unknown = [part for part in parts if part not in TRAINABLE_SCOPES]
    if unknown:
        raise FluosegError(
            f"unknown trainable scope {scope!r}; choose one of {sorted(TRAINABLE_SCOPES)} "
            f"or join them with '+' (e.g. 'excite+head')"
        )
    modules: list[nn.Module] = []
    for part in parts:
        selected = TRAINABLE_SCOPES[part](model)
        if not any(True for module in selected for _ in module.parameters()):
            raise FluosegError(
                f"the model has no parameters in trainable scope {part!r} ({_DESCRIPTIONS[part]}); "
                f"build it with attention 'me' or choose another scope from {sorted(TRAINABLE_SCOPES)}"
            )
        modules += selected
    return modules


def trainable_parameters(model: nn.Module, scope: str) -> list[str]:
    """Names of the parameters a scope trains, in ``model.named_parameters()`` order.

    Parameters
    ----------
    model
        Any network; ``"head"`` needs its ``output_layers()``.
    scope
        ``"all"``, ``"excite"``, ``"head"``, or several joined with ``+``.

    Raises
    ------
    FluosegError
        For an unknown scope (the message lists them) or a scope with no parameters in
        this model (e.g. ``"excite"`` on a U-Net without attention).
    """
    chosen = {id(p) for module in _scope_modules(model, scope) for p in module.parameters()}
    return [name for name, parameter in model.named_parameters() if id(parameter) in chosen]


def freeze_except(model: nn.Module, scope: str) -> list[str]:
    """Let only the parameters of ``scope`` require gradients; returns their names.

    Frozen parameters get ``requires_grad = False``, so they receive no gradient and an
    optimiser (built over all parameters or only the trainable ones) leaves them unchanged.
    Call :func:`eval_frozen_normalization` after every ``model.train()`` when the network
    has batch normalisation.

    Raises
    ------
    FluosegError
        As :func:`trainable_parameters`.
    """
    names = trainable_parameters(model, scope)
    keep = set(names)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in keep)
    return names


def eval_frozen_normalization(model: nn.Module) -> list[str]:
    """Put normalisation layers whose parameters are all frozen into eval mode.

    In training mode batch normalisation updates its running mean and variance even when
    its affine parameters are frozen, which would change a "frozen" network during
    Marker-Excite-only fine-tuning. Layers without parameters count as frozen unless the
    whole model trains.

    Returns
    -------
    list of str
        Names of the layers switched to eval mode.
    """
    everything_trains = all(p.requires_grad for p in model.parameters())
    switched = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.modules.batchnorm._NormBase):
            continue
        parameters = list(module.parameters())
        frozen = not any(p.requires_grad for p in parameters) if parameters else not everything_trains
        if frozen:
            module.eval()
            switched.append(name)
    return switched

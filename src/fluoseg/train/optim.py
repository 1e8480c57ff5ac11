"""Optimisers and learning-rate schedules, built by name from the ``train`` config.

MS-ME trains with Adam at a constant learning rate; the transfer-learning study compares
Adam with SGD at momentum 0.9 (its Table 1). Schedules act once per epoch, after
validation:

========== =================================================================
``none``   constant learning rate (default)
``step``   multiply by ``gamma`` every ``step_size`` epochs (``StepLR``)
``cosine`` anneal to 0 over ``epochs`` epochs (``CosineAnnealingLR``)
``plateau`` multiply by ``gamma`` after ``patience`` epochs without a better
           selection value (``ReduceLROnPlateau``)
========== =================================================================

The plateau schedule watches the same quantity that selects ``best.pt``, expressed so that
higher is better: the validation score, or minus the validation loss (``select_by:
loss``), or minus the training loss when there are no validation samples. Every schedule
has a ``state_dict`` that goes into the checkpoint, so a resumed run continues it exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from fluoseg.config import OPTIMIZERS, SCHEDULES
from fluoseg.errors import FluosegError


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter],
    name: str = "adam",
    *,
    learning_rate: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """An optimiser by name.

    Parameters
    ----------
    parameters
        Model parameters to optimise.
    name
        ``"adam"`` (torch defaults: betas 0.9/0.999, eps 1e-8) or ``"sgd"``.
    learning_rate
        Initial learning rate.
    momentum
        SGD momentum (``v = momentum * v + g``; ignored by Adam).
    weight_decay
        L2 penalty added to the gradients (for Adam too: this is Adam with L2, not AdamW).

    Raises
    ------
    FluosegError
        For an unknown name.
    """
    if name == "adam":
        return torch.optim.Adam(parameters, lr=learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=learning_rate, momentum=momentum, weight_decay=weight_decay)
    raise FluosegError(f"unknown optimizer {name!r}; use one of {list(OPTIMIZERS)}")


class EpochSchedule:
    """A learning-rate schedule stepped once per epoch with the epoch's selection value.

    Parameters
    ----------
    optimizer
        The optimiser whose learning rate is scheduled.
    name
        One of :data:`SCHEDULES`.
    epochs
        Total epochs of the run (the cosine period).
    step_size, gamma, patience
        See the module notes.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, name: str = "none", *, epochs: int = 1, step_size: int = 10,
                 gamma: float = 0.1, patience: int = 5) -> None:
        if name not in SCHEDULES:
            raise FluosegError(f"unknown schedule {name!r}; use one of {list(SCHEDULES)}")
        self.name = name
        self.optimizer = optimizer
        self.scheduler: Any = None
        if name == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
        elif name == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
        elif name == "plateau":
            # mode "max": the trainer passes a higher-is-better selection value (see module notes).
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=gamma,
                                                                        patience=patience)

    @property
    def learning_rate(self) -> float:
        """Learning rate of the first parameter group (the one the next epoch uses)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, value: float | None = None) -> None:
        """End an epoch; ``value`` (higher is better) is what the plateau schedule watches."""
        if self.scheduler is None:
            return
        if self.name == "plateau":
            if value is not None and value == value:  # a NaN score neither improves nor counts as a bad epoch
                self.scheduler.step(value)
        else:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        """Plain state for a ``weights_only`` checkpoint (the optimiser is saved separately)."""
        state = {} if self.scheduler is None else self.scheduler.state_dict()
        return {"name": self.name, "state": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises
        ------
        FluosegError
            If the state belongs to another schedule.
        """
        if state.get("name") != self.name:
            raise FluosegError(f"checkpoint holds schedule {state.get('name')!r}, not {self.name!r}; "
                               "resume with the config the run started with")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["state"])


def build_schedule(optimizer: torch.optim.Optimizer, name: str = "none", **options: Any) -> EpochSchedule:
    """The :class:`EpochSchedule` ``name`` with ``epochs``, ``step_size``, ``gamma``, ``patience``."""
    return EpochSchedule(optimizer, name, **options)

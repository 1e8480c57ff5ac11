"""Look-up of models and model parts by name.

Architectures, marker input layers and attention modules are chosen by name in a config
file, so each kind has a :class:`Registry`: a class registers itself under a name with a
decorator, and ``build`` constructs it from keyword options, turning unknown names and
unknown options into :class:`~fluoseg.errors.FluosegError` s that list what is accepted.

Models additionally remember how they were built (:func:`model_spec`), so a checkpoint can
store a small JSON-able dict ``{"name", "in_channels", "out_channels", "options"}`` and
rebuild the same network with ``build_model(**spec)``.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from torch import nn

from fluoseg.errors import FluosegError

T = TypeVar("T", bound=type)

_SPEC_ATTRIBUTE = "_fluoseg_spec"


class Registry(Generic[T]):
    """Classes of one kind, looked up by name.

    Parameters
    ----------
    kind
        What the registered things are, for messages (``"model"``, ``"attention module"``).
    required
        Constructor arguments that fluoseg always supplies itself (``in_channels``...);
        they are not user options and are not listed as such in error messages.
    """

    def __init__(self, kind: str, *, required: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.required = required
        self._classes: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator registering ``cls`` under ``name``.

        Raises
        ------
        ValueError
            If the name is taken by another class (two plugins clashing is a bug).
        """

        def decorator(cls: T) -> T:
            existing = self._classes.get(name)
            # Re-registering the same class happens when a module is reloaded; allow it.
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise ValueError(f"{self.kind} name {name!r} is already registered by {existing.__qualname__}")
            self._classes[name] = cls
            return cls

        return decorator

    def unregister(self, name: str) -> None:
        """Remove a registration (plugins under test); unknown names are ignored."""
        self._classes.pop(name, None)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._classes)

    def get(self, name: str) -> T:
        """The class registered under ``name``.

        Raises
        ------
        FluosegError
            If no class has that name; the message lists the registered names.
        """
        try:
            return self._classes[name]
        except (KeyError, TypeError):
            raise FluosegError(f"unknown {self.kind} {name!r}; choose one of {self.names()}") from None

    def options(self, name: str) -> list[str]:
        """Keyword options accepted by the class registered under ``name`` (sorted)."""
        parameters = inspect.signature(self.get(name).__init__).parameters
        return sorted(
            p.name
            for p in parameters.values()
            if p.name != "self"
            and p.name not in self.required
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        )

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """Construct the class registered under ``name``.

        Raises
        ------
        FluosegError
            For an unknown name, or an option the class does not accept (the message names
            it and lists the accepted ones).
        """
        cls = self.get(name)
        accepted = self.options(name)
        for key in kwargs:
            if key not in accepted and key not in self.required:
                raise FluosegError(f"unknown option {key!r} for {self.kind} {name!r}; accepted options: {accepted}")
        return cls(**kwargs)


MODELS: Registry[type[nn.Module]] = Registry("model", required=("in_channels", "out_channels"))
"""Segmentation networks: ``forward(x, availability)``, ``output_size``, ``valid_input_size``."""

ATTENTION: Registry[type[nn.Module]] = Registry("attention module", required=("channels", "n_markers"))
"""Modules ``forward(features, availability) -> features`` placed after network blocks."""


def record_construction(cls: T, name: str) -> T:
    """Make every instance of ``cls`` remember its name and constructor arguments.

    The arguments (defaults filled in, ``**kwargs`` flattened) are stored as
    ``{"name": name, **arguments}`` and read back with :func:`recorded_construction`,
    so that a checkpoint can describe how to rebuild the instance.

    Raises
    ------
    ValueError
        If the constructor has an argument named ``options`` (reserved by the builders).
    """
    original_init = cls.__init__
    signature = inspect.signature(original_init)
    if "options" in signature.parameters:
        raise ValueError("'options' is reserved by the builders and cannot be a constructor argument")
    var_keyword = [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]

    @functools.wraps(original_init)
    def init(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop("self")
        for key in var_keyword:
            arguments.update(arguments.pop(key, {}))
        # Set last: a registered subclass calling a registered parent's __init__ must
        # end up described by its own name and arguments.
        object.__setattr__(self, _SPEC_ATTRIBUTE, {"name": name, **arguments})

    cls.__init__ = init  # type: ignore[misc]
    return cls


def recorded_construction(model: nn.Module) -> Mapping[str, Any] | None:
    """``{"name", **arguments}`` recorded by :func:`record_construction`, or ``None``."""
    return getattr(model, _SPEC_ATTRIBUTE, None)


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator making a segmentation network buildable by ``name``.

    Besides registering, it records the constructor arguments of every instance (defaults
    filled in) so that :func:`model_spec` can describe the instance later.

    Examples
    --------
    >>> @register_model("tiny")                          # doctest: +SKIP
    ... class Tiny(nn.Module):
    ...     def __init__(self, in_channels, out_channels, *, width=8): ...
    """

    def decorator(cls: T) -> T:
        if "options" in inspect.signature(cls.__init__).parameters:
            raise ValueError("'options' is reserved by build_model and cannot be a model constructor argument")
        MODELS.register(name)(cls)  # before wrapping, so a name clash leaves the class untouched
        return record_construction(cls, name)

    return decorator


def build_model(
    name: str, *, in_channels: int, out_channels: int, options: Mapping[str, Any] | None = None, **more_options: Any
) -> nn.Module:
    """Build a registered segmentation network.

    Parameters
    ----------
    name
        Registered architecture name, see :func:`model_names`.
    in_channels
        Number of marker slots K.
    out_channels
        Number of output logit channels.
    options
        Architecture options as a mapping (the ``model.options`` config section, or the
        ``"options"`` of a :func:`model_spec`), e.g. ``{"depth": 4, "padding": "valid"}``.
    **more_options
        Architecture options as keywords; merged with ``options``.

    Raises
    ------
    FluosegError
        For an unknown name or option, an option given twice, or an invalid option value.
    """
    sizes = {"in_channels": in_channels, "out_channels": out_channels}
    merged = merge_options("model", sizes, options, more_options)
    return MODELS.build(name, **sizes, **merged)


def merge_options(kind: str, sizes: Mapping[str, Any], options: Mapping[str, Any] | None,
                  more_options: Mapping[str, Any]) -> dict[str, Any]:
    """Check the channel counts and merge options given as a mapping and as keywords.

    Raises
    ------
    FluosegError
        If a count in ``sizes`` is not a positive integer, ``options`` is not a mapping,
        or an option is given both ways.
    """
    for label, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FluosegError(f"{label} must be a positive integer, got {value!r}")
    if options is not None and not isinstance(options, Mapping):
        raise FluosegError(f"{kind} options must be a mapping of option names to values, got {options!r}")
    merged = dict(options or {})
    twice = sorted(set(merged) & set(more_options))
    if twice:
        raise FluosegError(f"{kind} option(s) {twice} given twice; give each once")
    merged.update(more_options)
    return merged


def model_names() -> list[str]:
    """Names of the registered segmentation networks, sorted."""
    return MODELS.names()


def model_spec(model: nn.Module) -> dict[str, Any]:
    """How to rebuild ``model``: ``{"name", "in_channels", "out_channels", "options"}``.

    ``options`` holds every constructor option, defaults included, so a checkpoint does not
    depend on defaults that may change. The dict is JSON-able (tuples become lists) and
    ``build_model(**model_spec(model))`` builds an identical, freshly initialised network
    whose ``state_dict`` fits.

    Raises
    ------
    ValueError
        If the model was not built by a registered class, or an option is not JSON-able.
    """
    recorded = recorded_construction(model)
    if recorded is None:
        raise ValueError(f"{type(model).__qualname__} is not a registered fluoseg model")
    options = {k: v for k, v in recorded.items() if k not in ("name", "in_channels", "out_channels")}
    spec = {"name": recorded["name"], "in_channels": recorded["in_channels"],
            "out_channels": recorded["out_channels"], "options": options}
    try:
        return json.loads(json.dumps(spec))
    except TypeError as exc:
        raise ValueError(f"model options of {spec['name']!r} are not JSON-able: {exc}") from None


def register_attention(name: str) -> Callable[[T], T]:
    """Class decorator registering an attention module under ``name``.

    The class is constructed as ``cls(channels=F, n_markers=K, **options)`` and called as
    ``module(features, availability) -> features`` with features ``(N, F, H, W)`` and
    availability ``(N, K)``.
    """
    return ATTENTION.register(name)


def build_attention(name: str, *, channels: int, n_markers: int, **options: Any) -> nn.Module:
    """Build a registered attention module for a block with ``channels`` features.

    Raises
    ------
    FluosegError
        For an unknown name or option.
    """
    return ATTENTION.build(name, channels=channels, n_markers=n_markers, **options)


def attention_names() -> list[str]:
    """Names of the registered attention modules, sorted."""
    return ATTENTION.names()


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (only those requiring grad if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

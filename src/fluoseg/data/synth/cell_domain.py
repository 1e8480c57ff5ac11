"""Imaging and tissue settings ("domains") of the multi-marker cell simulator.

A :class:`CellDomain` fixes everything that differs between two labs imaging the same kind
of tissue: how bright each stain is, how much cells vary in expression, background,
noise, blur and cell size. :mod:`fluoseg.data.synth.cells` draws images from a domain; two
presets exist so that domain adaptation can be measured on data that shifts in a known,
controlled way:

- ``"default"``: bright membrane (ECAD) and nuclear (DAPI) stains, moderate noise;
- ``"shifted"``: smaller, denser cells, a weak membrane stain and a bright cytoplasm
  stain, a stronger distractor, higher background, more shot noise and more blur.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from fluoseg.errors import FluosegError

__all__ = ["CELL_DOMAINS", "CELL_MARKERS", "DEFAULT_CELL_MARKERS", "CellDomain", "cell_domain"]

CELL_MARKERS = ("DAPI", "ECAD", "CK", "CD45", "KI67")
"""Every marker the cell simulator can draw, in the order it draws them."""

DEFAULT_CELL_MARKERS = ("DAPI", "ECAD", "CK", "CD45")
"""Nuclear, membrane, cytoplasm and distractor marker: the panel written by default."""

_DEFAULT_STRENGTH = {"DAPI": 170.0, "ECAD": 130.0, "CK": 80.0, "CD45": 150.0, "KI67": 110.0}
_SHIFTED_STRENGTH = {"DAPI": 120.0, "ECAD": 55.0, "CK": 110.0, "CD45": 200.0, "KI67": 90.0}


@dataclass(frozen=True)
class CellDomain:
    """Settings of the cell simulator; intensities are in counts of an 8-bit camera.

    Attributes
    ----------
    name
        Label of the domain, written into the dataset's provenance file.
    cell_diameter
        Mean distance between neighbouring cell centres in pixels; sets the density.
    tissue_fraction
        Share of the image covered by tissue (cells); the rest is empty background.
    nucleus_ratio
        Nucleus radius as a fraction of the cell radius.
    strength
        Peak brightness above background of each marker of :data:`CELL_MARKERS`.
    expression_spread
        Log-normal sigma of the per-cell expression level of every marker.
    background
        Mean background level in counts (each sample and marker varies it by +-40 %).
    read_noise
        Standard deviation of the camera's read noise in counts.
    gain
        Shot noise: the noise variance grows by ``gain`` per count of signal.
    blur
        Gaussian sigma of the optics' blur in pixels.
    membrane_width
        Gaussian half-width of the membrane stain around the cell outline in pixels.
    distractor_density
        Bright CD45 blobs per pixel, placed independently of the cells.
    proliferating_fraction
        Share of cells whose nucleus shows KI67.
    pixel_size_um
        Pixel size written to the images' metadata, µm.
    """

    name: str = "default"
    cell_diameter: float = 24.0
    tissue_fraction: float = 0.8
    nucleus_ratio: float = 0.45
    strength: Mapping[str, float] = field(default_factory=lambda: dict(_DEFAULT_STRENGTH))
    expression_spread: float = 0.3
    background: float = 12.0
    read_noise: float = 4.0
    gain: float = 0.8
    blur: float = 0.9
    membrane_width: float = 1.1
    distractor_density: float = 3e-4
    proliferating_fraction: float = 0.3
    pixel_size_um: float = 0.5

    def __post_init__(self) -> None:
        strength = {str(k): v for k, v in dict(self.strength).items()}
        unknown = sorted(set(strength) - set(CELL_MARKERS))
        missing = [m for m in CELL_MARKERS if m not in strength]
        if unknown or missing:
            raise FluosegError(
                f"cell domain {self.name!r}: 'strength' needs exactly the markers {list(CELL_MARKERS)}"
                f" (unknown {unknown}, missing {missing})"
            )
        for marker, value in strength.items():
            _check_number(self.name, f"strength.{marker}", value, low=0.0, high=255.0)
        object.__setattr__(self, "strength", {m: float(strength[m]) for m in CELL_MARKERS})
        for name, low, high in _BOUNDS:
            _check_number(self.name, name, getattr(self, name), low=low, high=high)
            object.__setattr__(self, name, float(getattr(self, name)))

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain YAML/JSON-able values."""
        return asdict(self)

    def updated(self, changes: Mapping[str, Any], *, source: str | Path | None = None) -> CellDomain:
        """A copy with some settings changed; ``strength`` may list only some markers.

        Raises
        ------
        FluosegError
            For an unknown setting or a value out of range.
        """
        known = [f.name for f in fields(self)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise FluosegError(f"unknown cell domain setting(s) {unknown}; known settings: {known}", path=source)
        changes = dict(changes)
        if "strength" in changes:
            if not isinstance(changes["strength"], Mapping):
                raise FluosegError("cell domain setting 'strength' must map marker names to brightness", path=source)
            changes["strength"] = {**self.strength, **changes["strength"]}
        try:
            return replace(self, **changes)
        except FluosegError as error:
            raise FluosegError(error.message, path=source) from None


_BOUNDS: tuple[tuple[str, float, float], ...] = (
    ("cell_diameter", 8.0, 200.0),
    ("tissue_fraction", 0.05, 1.0),
    ("nucleus_ratio", 0.1, 0.8),
    ("expression_spread", 0.0, 2.0),
    ("background", 0.0, 200.0),
    ("read_noise", 0.0, 100.0),
    ("gain", 0.0, 50.0),
    ("blur", 0.0, 10.0),
    ("membrane_width", 0.3, 10.0),
    ("distractor_density", 0.0, 0.01),
    ("proliferating_fraction", 0.0, 1.0),
    ("pixel_size_um", 1e-3, 100.0),
)
"""Admissible ``[low, high]`` range of every numeric setting but the strengths."""


def _check_number(domain: str, name: str, value: Any, *, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise FluosegError(f"cell domain {domain!r}: {name} must be a number in [{low}, {high}], got {value!r}")


CELL_DOMAINS: dict[str, CellDomain] = {
    "default": CellDomain(),
    "shifted": CellDomain(
        name="shifted",
        cell_diameter=19.0,
        tissue_fraction=0.9,
        nucleus_ratio=0.5,
        strength=dict(_SHIFTED_STRENGTH),
        expression_spread=0.5,
        background=30.0,
        read_noise=8.0,
        gain=2.0,
        blur=1.4,
        membrane_width=0.9,
        distractor_density=8e-4,
        proliferating_fraction=0.5,
    ),
}
"""The simulator's presets by name."""


def cell_domain(spec: str | Mapping[str, Any] | CellDomain = "default", *, source: str | Path | None = None
                ) -> CellDomain:
    """A cell domain from a preset name, a mapping of settings, or a domain.

    Parameters
    ----------
    spec
        A preset name (see :data:`CELL_DOMAINS`); a mapping of settings, applied on top of
        the preset named by its ``base`` key (default ``"default"``); or a domain,
        returned as is.
    source
        File the settings came from, for error messages.

    Raises
    ------
    FluosegError
        For an unknown preset or setting, or a value out of range.

    Examples
    --------
    >>> cell_domain({"base": "shifted", "read_noise": 12}).read_noise
    12.0
    """
    if isinstance(spec, CellDomain):
        return spec
    if isinstance(spec, str):
        if spec not in CELL_DOMAINS:
            raise FluosegError(f"unknown cell domain {spec!r}; choose one of {sorted(CELL_DOMAINS)}", path=source)
        return CELL_DOMAINS[spec]
    if not isinstance(spec, Mapping):
        raise FluosegError(f"a cell domain is a preset name or a mapping of settings, got {spec!r}", path=source)
    settings = dict(spec)
    base = cell_domain(str(settings.pop("base", "default")), source=source)
    if "name" not in settings:
        settings["name"] = f"{base.name}-custom"
    return base.updated(settings, source=source)

"""Marker panels: the named input slots of a model.

A model is trained on a panel of K named markers (stains). Every image is mapped onto the
panel *by marker name*, never by channel position: the channel called ``endomucin`` goes to
the ``endomucin`` slot wherever it sits in the file. Slots of markers an image lacks are
zero-filled, and the availability vector tells the network which slots carry signal.

A model without slots (a channel-invariant front end, :mod:`fluoseg.models.channel_invariant`)
can also be fed chosen channels as they are, markers outside its panel included
(:class:`ChannelFeed`); it is told which marker each channel is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from fluoseg.errors import FluosegError


class MarkerPanel:
    """An ordered set of K named markers, one model input slot each.

    Parameters
    ----------
    names
        Marker names in slot order. Names are case-sensitive and must be unique.

    Examples
    --------
    >>> panel = MarkerPanel(["DAPI", "endomucin", "collagen"])
    >>> panel.availability(["collagen"]).tolist()
    [0.0, 0.0, 1.0]
    """

    def __init__(self, names: Sequence[str] | str) -> None:
        cleaned = (names.strip(),) if isinstance(names, str) else tuple(str(n).strip() for n in names)
        if not cleaned:
            raise FluosegError("a marker panel needs at least one marker name")
        if any(not n for n in cleaned):
            raise FluosegError(f"empty marker name in {list(cleaned)}; give every channel a name")
        commas = [n for n in cleaned if "," in n]
        if commas:
            raise FluosegError(f"marker names cannot contain commas (selections such as 'a,b' are comma-separated); "
                               f"rename {commas}")
        duplicates = sorted({n for n in cleaned if cleaned.count(n) > 1})
        if duplicates:
            raise FluosegError(f"duplicate marker names {duplicates}; marker names must be unique")
        self.names: tuple[str, ...] = cleaned

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"MarkerPanel({list(self.names)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MarkerPanel) and other.names == self.names

    def __hash__(self) -> int:
        return hash(self.names)

    def index(self, name: str, *, source: str | Path | None = None, hint: str | None = None) -> int:
        """Slot index of a marker.

        Parameters
        ----------
        name
            Marker name.
        source
            File the name came from, for error messages.
        hint
            How to fix an unknown name, ending the error message (default: rename the
            channel or choose a subset of the known markers).

        Raises
        ------
        FluosegError
            If the marker is not in the panel; the message lists the known markers.
        """
        try:
            return self.names.index(name)
        except ValueError:
            raise FluosegError(
                f"unknown marker {name!r}; this model knows {list(self.names)} "
                f"({hint or 'rename the channel or choose a subset of these'})",
                path=source,
            ) from None

    def parse(self, spec: str | Sequence[str], *, source: str | Path | None = None, allow_unknown: bool = False,
              hint: str | None = None) -> tuple[str, ...]:
        """Validate a marker selection given as ``"a,b"`` or a list of names.

        Parameters
        ----------
        spec
            ``"a,b"`` or a list of names; blanks around names are dropped.
        source
            File the selection came from, for error messages.
        allow_unknown
            Keep names outside the panel (for models that take any marker) instead of
            refusing them.
        hint
            How to fix an unknown name (see :meth:`index`).

        Returns
        -------
        tuple of str
            The panel's names in panel order, then (``allow_unknown``) the other names in
            the order given; each once.

        Raises
        ------
        FluosegError
            For an empty selection, or an unknown name unless ``allow_unknown``.
        """
        names = spec.split(",") if isinstance(spec, str) else list(spec)
        names = [n for n in (str(n).strip() for n in names) if n]
        if not names:
            raise FluosegError("the marker selection is empty; name at least one marker", path=source)
        others = [n for n in dict.fromkeys(names) if n not in self.names] if allow_unknown else []
        slots = sorted({self.index(n, source=source, hint=hint) for n in names if n not in others})
        return tuple(self.names[i] for i in slots) + tuple(others)

    def availability(self, present: Iterable[str], *, source: str | Path | None = None) -> np.ndarray:
        """Availability vector: 1.0 for every panel slot whose marker is present, else 0.0."""
        vector = np.zeros(len(self), dtype=np.float32)
        for name in present:
            vector[self.index(name, source=source)] = 1.0
        return vector

    def arrange(
        self,
        image: np.ndarray,
        channel_names: Sequence[str],
        *,
        use: Iterable[str] | None = None,
        source: str | Path | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Place an image's channels into the panel's slots by name.

        A one-off shorthand for :meth:`MarkerSelection.resolve` followed by
        :meth:`MarkerSelection.arrange`; resolve once and reuse the selection when many
        windows of one image are arranged.

        Returns
        -------
        slots, availability
            ``(K, ...)`` float32 array with zeros in the slots of missing markers, and the
            ``(K,)`` availability vector.
        """
        selection = MarkerSelection.resolve(self, channel_names, use=use, source=source)
        return selection.arrange(image, source=source), selection.availability

    def subsets(self) -> list[tuple[str, ...]]:
        """All 2^K - 1 non-empty marker subsets, smallest first, each in panel order."""
        return [
            tuple(self.names[i] for i in combo)
            for size in range(1, len(self) + 1)
            for combo in combinations(range(len(self)), size)
        ]

    def subset_code(self, subset: Iterable[str]) -> str:
        """Short code of a subset in the paper's notation: 1-based slot numbers, e.g. ``"m_135"``."""
        slots = sorted(self.index(n) for n in subset)
        return "m_" + "".join(str(i + 1) for i in slots)


@dataclass(frozen=True)
class MarkerSelection:
    """How the channels of one image feed a model: resolved once, applied to every window.

    Attributes
    ----------
    panel
        The model's marker panel.
    channel_names
        Marker name of every image channel, in file order.
    used
        The markers fed to the network, in panel order.
    channel_slots
        For every image channel, the panel slot it fills, or ``None`` when it is not fed
        (not selected, or ignored).
    availability
        ``(K,)`` float32 0/1 vector of the used slots (Marker Excite's input).
    """

    panel: MarkerPanel
    channel_names: tuple[str, ...]
    used: tuple[str, ...]
    channel_slots: tuple[int | None, ...]
    availability: np.ndarray

    @classmethod
    def resolve(
        cls,
        panel: MarkerPanel,
        channel_names: Sequence[str],
        *,
        use: Iterable[str] | None = None,
        ignore: Iterable[str] = (),
        source: str | Path | None = None,
        hint: str | None = None,
    ) -> MarkerSelection:
        """Match an image's channels to the panel by name.

        Parameters
        ----------
        panel
            The model's markers.
        channel_names
            Marker name of each image channel.
        use
            Markers to feed the model (a subset of the image's and the panel's); default
            every channel that is not ignored. When markers are chosen, the image's other
            channels are left out whatever their names (a multiplexed file may hold markers the
            model never saw); without a choice, every channel must be a known marker.
        ignore
            Channel names that are never inputs and need not be known to the panel (e.g.
            in-silico-labelling targets, or markers left out of a model's panel).
        source
            File the image came from, for error messages.
        hint
            How to fix an unknown marker name, ending its error message (see
            :meth:`MarkerPanel.index`).

        Raises
        ------
        FluosegError
            For an unknown channel name (not ignored), an empty or unknown selection, or a
            selected marker the image lacks.
        """
        names = tuple(channel_names)
        ignored = set(ignore)
        if use is not None:
            use = list(use)
            chosen_names = {str(n).strip() for n in use}
            ignored |= {n for n in names if n not in chosen_names}
        used_names = [n for n in names if n not in ignored]
        _refuse_repeated(used_names, source)
        for name in used_names:
            panel.index(name, source=source, hint=hint)  # an unknown marker the user would feed is an error
        candidates = [n for n in names if n not in ignored] if use is None else list(use)
        used = panel.parse(candidates, source=source, hint=hint)
        _refuse_missing(used, names, source)
        chosen = set(used) - ignored
        slots = tuple(panel.index(n) if n in chosen else None for n in names)
        return cls(panel=panel, channel_names=names, used=used, channel_slots=slots,
                   availability=panel.availability(used, source=source))

    def arrange(self, image: np.ndarray, *, source: str | Path | None = None) -> np.ndarray:
        """``(C, ...)`` image -> ``(K, ...)`` float32 slots, zeros where a marker is not used."""
        _check_channel_count(image, self.channel_names, source)
        slots = np.zeros((len(self.panel),) + tuple(image.shape[1:]), dtype=np.float32)
        for channel, slot in enumerate(self.channel_slots):
            if slot is not None:
                slots[slot] = image[channel]
        return slots


@dataclass(frozen=True)
class ChannelFeed:
    """Chosen channels of one image fed as they are, for a model without marker slots.

    A channel-invariant model takes any number of channels, each with the name of its
    marker; a marker outside the model's panel is fed too (the model treats it as "some
    marker"). Nothing is placed into slots: the chosen channels keep the image's order.

    Attributes
    ----------
    panel
        The model's marker panel.
    channel_names
        Marker name of every image channel, in file order.
    used
        The markers fed to the network, in the image's channel order.
    channels
        Image channel index of every fed marker (same order as ``used``).
    availability
        ``(len(used),)`` float32 ones: every fed channel carries a marker.
    """

    panel: MarkerPanel
    channel_names: tuple[str, ...]
    used: tuple[str, ...]
    channels: tuple[int, ...]
    availability: np.ndarray

    @property
    def unknown(self) -> tuple[str, ...]:
        """The fed markers outside the panel."""
        return tuple(n for n in self.used if n not in self.panel.names)

    @classmethod
    def resolve(
        cls,
        panel: MarkerPanel,
        channel_names: Sequence[str],
        *,
        use: Iterable[str],
        ignore: Iterable[str] = (),
        source: str | Path | None = None,
    ) -> ChannelFeed:
        """Pick the chosen channels of an image by name; names outside the panel are allowed.

        Parameters
        ----------
        panel
            The model's markers.
        channel_names
            Marker name of each image channel.
        use
            Markers to feed, known to the panel or not; the image's other channels are left
            out. A choice is required: feeding a marker the model never saw is opted into.
        ignore
            Channel names that are never inputs (e.g. in-silico-labelling targets).
        source
            File the image came from, for error messages.

        Raises
        ------
        FluosegError
            For an empty selection, a chosen marker the image lacks, or a chosen name
            carried by several channels.
        """
        names = tuple(channel_names)
        ignored = set(ignore)
        chosen = panel.parse([n for n in use if str(n).strip() not in ignored], source=source, allow_unknown=True)
        _refuse_missing(chosen, names, source)
        _refuse_repeated([n for n in names if n in chosen], source)
        channels = tuple(i for i, n in enumerate(names) if n in chosen)
        return cls(panel=panel, channel_names=names, used=tuple(names[i] for i in channels), channels=channels,
                   availability=np.ones(len(channels), dtype=np.float32))

    def arrange(self, image: np.ndarray, *, source: str | Path | None = None) -> np.ndarray:
        """``(C, ...)`` image -> ``(len(used), ...)`` float32: the chosen channels, in image order."""
        _check_channel_count(image, self.channel_names, source)
        return np.asarray(image[list(self.channels)], dtype=np.float32)


def _check_channel_count(image: np.ndarray, channel_names: Sequence[str], source: str | Path | None) -> None:
    if image.shape[0] != len(channel_names):
        raise FluosegError(
            f"image has {image.shape[0]} channels but {len(channel_names)} marker names "
            f"{list(channel_names)} were given; give one name per channel",
            path=source,
        )


def _refuse_repeated(fed: Sequence[str], source: str | Path | None) -> None:
    """Two channels fed under one name would be indistinguishable to the model."""
    repeated = sorted({n for n in fed if list(fed).count(n) > 1})
    if repeated:
        raise FluosegError(f"channel name(s) {repeated} occur more than once; give every channel its own name",
                           path=source)


def _refuse_missing(chosen: Sequence[str], names: Sequence[str], source: str | Path | None) -> None:
    missing = sorted(set(chosen) - set(names))
    if missing:
        raise FluosegError(f"marker(s) {missing} requested but the image only has {list(names)}", path=source)

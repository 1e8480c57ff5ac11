"""Heterogeneous training panels: which markers each training sample is allowed to show.

The MS-ME paper (Fig. 4, Methods "Marker combination strategies") ablates markers of its
fully stained training samples to emulate datasets whose samples were stained with
different marker panels, assigns a predefined set of combinations ``M^train`` to the
training samples, shuffled anew for every cross-validation fold, and keeps all markers in
the validation and test samples. A manifest expresses such an assignment with ``available``
per sample; the trainer then zero-fills the other markers and marks them unavailable, and
Marker Sampling draws only among the available ones.

The six cases, on the marker slots 1..K of the panel (K = 5 in the paper: DAPI,
endomucin, endoglin, collagen, CXCL12-GFP). The paper gives its table only as a figure;
its text fixes Cases 1-4 as "a fixed number of markers per sample, each with a different
marker combination", says that ``m_23`` "in Case 3 is only trainable using samples s^1
or s^2, and in Case 1 not even trainable", Case 5 "two different sets of samples [...]
prepared with two different staining protocols" and Case 6 "samples available from
different studies". The choices below satisfy every one of these statements:

- Case n = 1..4: sample i gets the n cyclically consecutive slots starting at slot i
  (Case 3: m_123, m_234, m_345, m_145, m_125, so m_23 is in s^1 and s^2 only; Case 4:
  every panel of 4 markers).
- Case 5: two protocols sharing the nuclear stain (slot 1): m_123 and m_145, alternating
  over the samples (3 + 2 of 5). For other K: slot 1 plus the first / second half of the rest.
- Case 6: five "studies" with 2, 3, 4, 2 and 3 consecutive slots starting at slots 1, 3,
  2, 4 and 5: m_12, m_345, m_2345, m_45, m_125 (capped at K - 1 markers for other K).

With more samples than panels the panels repeat cyclically. Which sample gets which panel
is a seeded shuffle of the sample ids (``seed``), as the paper reshuffles per fold.

|M^UB| / |M^total| (paper's definitions): M^UB holds the combinations G contained in the
panel of at least one training sample (a dedicated network could be trained on them),
M^total every combination of markers present in any training sample (2^K - 1 when every
marker occurs). For K = 5: Case 1 5/31, 2 10/31, 3 20/31, 4 30/31, 5 13/31, 6 19/31.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fluoseg.config import RunConfig, read_yaml
from fluoseg.data.manifest import Manifest, load_manifest
from fluoseg.errors import FluosegError
from fluoseg.io import atomic_path
from fluoseg.markers import MarkerPanel

CASES: dict[int, str] = {
    1: "one marker per sample, a different one each (cyclic windows of 1)",
    2: "two consecutive markers per sample, a different pair each (cyclic windows of 2)",
    3: "three consecutive markers per sample (cyclic windows of 3)",
    4: "four consecutive markers per sample (cyclic windows of 4)",
    5: "two staining protocols sharing marker 1: m_1 + first half / m_1 + second half of the rest",
    6: "samples from different studies: windows of 2, 3, 4, 2, 3 markers at slots 1, 3, 2, 4, 5",
}
"""What each case assigns, in words (see the module notes)."""

_CASE6_LENGTHS = (2, 3, 4, 2, 3)
_CASE6_STARTS = (0, 2, 1, 3, 4)


def _window(start: int, length: int, n_markers: int) -> tuple[int, ...]:
    return tuple(sorted({(start + i) % n_markers for i in range(length)}))


def case_panels(case: int, n_markers: int) -> list[tuple[int, ...]]:
    """The panels of a case as 0-based slot tuples, in the order they are dealt to samples.

    Raises
    ------
    FluosegError
        For an unknown case or a panel too small for it.
    """
    if case not in CASES:
        raise FluosegError(f"unknown case {case}; choose one of {sorted(CASES)} (MS-ME paper, Fig. 4)")
    if case in (1, 2, 3, 4):
        if n_markers < case + 1:
            raise FluosegError(f"case {case} gives every sample {case} of the markers and needs at least {case + 1} "
                               f"markers, but the panel has {n_markers}")
        return [_window(start, case, n_markers) for start in range(n_markers)]
    if n_markers < 3:
        raise FluosegError(f"case {case} needs at least 3 markers, but the panel has {n_markers}")
    if case == 5:
        half = 1 + math.ceil((n_markers - 1) / 2)
        return [(0, *range(1, half)), (0, *range(half, n_markers))]
    return [_window(start % n_markers, min(length, n_markers - 1), n_markers)
            for start, length in zip(_CASE6_STARTS, _CASE6_LENGTHS)]


def assign_case(case: int, sample_ids: Sequence[str], markers: Sequence[str], *, seed: int = 0,
                channels: Mapping[str, Sequence[str]] | None = None) -> dict[str, tuple[str, ...]]:
    """Deal the panels of a case to samples.

    Parameters
    ----------
    case
        1 to 6.
    sample_ids
        The (training) samples that receive reduced panels.
    markers
        The marker panel in slot order (slot 1 first).
    seed
        Seed of the shuffle deciding which sample gets which panel.
    channels
        Markers each sample actually has, to intersect with; default: all of ``markers``.

    Returns
    -------
    dict
        Sample id -> assigned marker names in panel order.

    Raises
    ------
    FluosegError
        If a sample would be left with no marker.
    """
    panels = case_panels(case, len(markers))
    order = [str(i) for i in np.random.default_rng(seed).permutation(sorted(sample_ids))]
    assigned = {}
    for j, sample_id in enumerate(order):
        panel = [markers[slot] for slot in panels[j % len(panels)]]
        names = [n for n in panel if channels is None or n in channels[sample_id]]
        if not names:
            raise FluosegError(f"sample {sample_id!r} has none of the markers {panel} case {case} assigns it; "
                               "choose another seed or case")
        assigned[sample_id] = tuple(names)
    return {i: assigned[i] for i in sample_ids}


def trainable_combinations(panels: Iterable[Iterable[str]], markers: Sequence[str]) -> list[tuple[str, ...]]:
    """M^UB: combinations contained in the panel of at least one training sample, in subset order."""
    sets = [set(p) for p in panels]
    return [g for g in MarkerPanel(markers).subsets() if any(set(g) <= s for s in sets)]


def total_combinations(panels: Iterable[Iterable[str]]) -> int:
    """|M^total|: ``2^|union| - 1`` for the markers present in any training sample."""
    union = set().union(*map(set, panels))
    return 2 ** len(union) - 1


def ub_ratio(panels: Iterable[Iterable[str]], markers: Sequence[str]) -> tuple[int, int]:
    """``(|M^UB|, |M^total|)`` of the panels of the training samples."""
    panels = [tuple(p) for p in panels]
    return len(trainable_combinations(panels, markers)), total_combinations(panels)


def _entry_id(entry: Mapping[str, Any]) -> str:
    # Same rule as the manifest reader: explicit id, else the image file name before its first dot.
    return str(entry.get("id") or Path(str(entry["image"])).name.split(".")[0])


def write_manifest_with_available(manifest: str | Path, available: Mapping[str, Sequence[str]], out: str | Path, *,
                                  overwrite: bool = False, comment: str | None = None) -> Path:
    """Copy a manifest, setting ``available`` for the given samples; returns the new path.

    The copy's ``root`` is made absolute so it can live anywhere; everything else is kept.
    The result is loaded once before it replaces ``out``, so an invalid assignment never
    leaves a file behind.

    Raises
    ------
    FluosegError
        If ``out`` exists without ``overwrite``, a sample id is unknown, or a marker is not
        among that sample's channels.
    """
    source, out = Path(manifest).resolve(), Path(out)
    if out.exists() and not overwrite:
        raise FluosegError("output exists; pass --overwrite to replace it", path=out)
    known = {s.id for s in load_manifest(source).samples}
    unknown = sorted(set(available) - known)
    if unknown:
        raise FluosegError(f"no sample(s) {unknown} in the manifest; it has {sorted(known)}", path=source)
    raw = read_yaml(source)
    raw["root"] = str((source.parent / str(raw.get("root", "."))).resolve())
    mapping = {str(k): list(v) for k, v in (raw.get("available") or {}).items()}
    mapping.update({k: list(v) for k, v in available.items()})
    raw["available"] = mapping
    for entry in raw.get("samples") or []:
        # A per-sample 'available' wins over the mapping in the reader, so it is set there too.
        if isinstance(entry, dict) and "image" in entry and _entry_id(entry) in available:
            entry["available"] = list(available[_entry_id(entry)])
    header = "".join(f"# {line}\n" for line in (comment or "").splitlines())
    with atomic_path(out, overwrite=True) as temporary:
        temporary.write_text(header + yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        load_manifest(temporary)  # relative paths must still resolve from the new folder
    return out


def make_case_manifest(manifest: str | Path, case: int, out: str | Path, *, seed: int = 0,
                       sample_ids: Sequence[str] | None = None, overwrite: bool = False
                       ) -> tuple[dict[str, tuple[str, ...]], tuple[int, int]]:
    """The work behind ``fluoseg experiment panels``: write a manifest with a case's panels.

    Parameters
    ----------
    manifest, out
        Source manifest and the copy to write.
    case, seed
        Which case, and the shuffle of samples to panels.
    sample_ids
        Samples receiving reduced panels (the training samples); default all. The others
        keep their markers, like the paper's validation and test samples.

    Returns
    -------
    assignment, ratio
        Sample id -> markers, and ``(|M^UB|, |M^total|)`` over the assigned samples.
    """
    data: Manifest = load_manifest(manifest)
    ids = list(sample_ids) if sample_ids else [s.id for s in data.samples]
    for sample_id in ids:
        data.sample(sample_id)  # unknown ids are errors naming the known ones
    channels = {s.id: s.usable_markers for s in data.samples}
    assignment = assign_case(case, ids, data.markers, seed=seed, channels=channels)
    comment = (f"Written by 'fluoseg experiment panels --case {case} --seed {seed}' from {Path(manifest).resolve()}\n"
               f"Case {case}: {CASES[case]}")
    write_manifest_with_available(manifest, assignment, out, overwrite=overwrite, comment=comment)
    return assignment, ub_ratio(assignment.values(), data.markers)


def panel_of(config: RunConfig, manifest: Manifest) -> MarkerPanel:
    """The marker panel a run of ``config`` would have (``data.markers``, else every marker of the manifest)."""
    return MarkerPanel(config.data.markers or list(manifest.markers))

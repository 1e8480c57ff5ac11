"""Dataset manifests: a few lines of YAML that list the samples of a dataset.

Two forms, which can be combined::

    # a whole folder, one sample per image file (id = file stem)
    root: ../shared/data/vessels5
    markers: [DAPI, endomucin, endoglin, collagen, CXCL12-GFP]
    classes: [sinusoids, arteries]
    pixel_size_um: 1.0
    images: images/*.tif
    masks: masks/{id}.tif          # a (n_classes, Y, X) file in class order
    # labels: labels/{id}.tif      # instance labels (task: instance)
    # points: points/{id}.csv      # one point per object, columns y,x (LACSS weak supervision)

    # or sample by sample
    samples:
      - id: a
        image: a.ome.tif           # marker names from the OME metadata
        masks: {nuclei: a_nuclei.png}
        group: mouse1
        available: [DAPI, collagen] # this sample was stained with these markers only

Paths are relative to ``root``, which is relative to the manifest file.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fluoseg.config import format_validation_error, read_yaml
from fluoseg.data.sample import Sample
from fluoseg.errors import FluosegError
from fluoseg.io import os_errors_as_user_errors, read_image


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleEntry(_Entry):
    """One sample of the ``samples:`` list."""

    id: str | None = None
    image: str
    key: str | None = None
    markers: list[str] | None = None
    available: list[str] | None = None
    masks: str | dict[str, str] | None = None
    labels: str | None = None
    points: str | None = None
    group: str | None = None
    pixel_size_um: float | list[float] | None = None
    axes: str | None = None


class ManifestModel(_Entry):
    """The manifest file's schema."""

    root: str = "."
    markers: list[str] | None = None
    classes: list[str] = Field(default_factory=list)
    pixel_size_um: float | list[float] | None = None
    axes: str | None = None
    images: str | None = None
    masks: str | dict[str, str] | None = None
    labels: str | None = None
    points: str | None = None
    groups: dict[str, str] = Field(default_factory=dict)
    available: dict[str, list[str]] = Field(default_factory=dict)
    samples: list[SampleEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_samples(self) -> ManifestModel:
        if self.images is None and not self.samples:
            raise ValueError("a manifest needs 'images: <glob>' or a 'samples:' list")
        return self


@dataclass(frozen=True)
class Manifest:
    """A dataset: its samples plus the marker and class vocabulary they share."""

    path: Path
    samples: tuple[Sample, ...]
    classes: tuple[str, ...]

    @property
    def markers(self) -> tuple[str, ...]:
        """Every marker that occurs in any sample, in order of first appearance."""
        seen: dict[str, None] = {}
        for sample in self.samples:
            seen.update(dict.fromkeys(sample.channel_names))
        return tuple(seen)

    def sample(self, sample_id: str) -> Sample:
        """Look a sample up by id."""
        for sample in self.samples:
            if sample.id == sample_id:
                return sample
        raise FluosegError(
            f"no sample {sample_id!r}; the manifest has {[s.id for s in self.samples]}", path=self.path
        )


def _pixel_size(value: float | list[float] | None, manifest: Path) -> tuple[float, ...] | None:
    if value is None:
        return None
    sizes = tuple(float(v) for v in value) if isinstance(value, list) else (float(value),)
    if not 1 <= len(sizes) <= 3 or not all(math.isfinite(s) and s > 0 for s in sizes):
        raise FluosegError(
            f"pixel_size_um {value!r} must be a positive size in µm, or one per spatial axis "
            "([y, x] or [z, y, x])",
            path=manifest,
        )
    return sizes


def _fill(template: str, sample_id: str, key: str, manifest: Path) -> str:
    """``template`` with ``{id}`` replaced by the sample id; other placeholders are mistakes."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        if fields <= {"id"}:
            return template.format(id=sample_id)
        problem = f"uses {{{sorted(fields - {'id'})[0]}}}"
    except ValueError as exc:  # unbalanced braces, bad format spec
        problem = f"is not a valid pattern ({exc})"
    raise FluosegError(
        f"'{key}: {template}' {problem}; only {{id}} (the sample id) can be filled in, "
        "write other braces twice ({{ }})",
        path=manifest,
    )


def _glob(root: Path, pattern: str, manifest: Path) -> list[Path]:
    try:
        with os_errors_as_user_errors(root, "read"):  # e.g. a name too long for the disk
            return sorted(root.glob(pattern))
    except (ValueError, NotImplementedError) as exc:  # empty, absolute or malformed pattern
        raise FluosegError(
            f"'images: {pattern}' is not a usable pattern ({exc}); give a glob relative to "
            "root, e.g. images/*.tif",
            path=manifest,
        ) from None


def _refuse_nul(value: Any, manifest: Path, where: str = "") -> None:
    """Raise for a NUL character anywhere: no file name can hold one, and os calls reject it."""
    if isinstance(value, str) and "\x00" in value:
        raise FluosegError(
            f"{where or 'the manifest'} holds a NUL character (\\x00); remove it", path=manifest
        )
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _refuse_nul(key, manifest, where)
        _refuse_nul(item, manifest, f"{where}.{key}" if where else str(key))


def _mask_sources(
    spec: str | dict[str, str] | None, classes: list[str], root: Path, sample_id: str, manifest: Path
) -> dict[str, tuple[Path, int | None]]:
    if spec is None:
        return {}
    if isinstance(spec, str):
        if not classes:
            raise FluosegError(
                "a single mask file per sample needs 'classes:' listing the class of each channel",
                path=manifest,
            )
        path = root / _fill(spec, sample_id, "masks", manifest)
        return {name: (path, i) for i, name in enumerate(classes)}
    return {name: (root / _fill(template, sample_id, f"masks.{name}", manifest), None)
            for name, template in spec.items()}


def _channel_names(declared: list[str] | None, image_path: Path, key: str | None, axes: str | None,
                   manifest: Path) -> tuple[str, ...]:
    """Marker names from the manifest, else from the file's own metadata (OME channel names)."""
    if declared:
        return tuple(declared)
    names = read_image(image_path, key=key, axes=axes, lazy=True).channel_names
    if not names:
        raise FluosegError(
            f"{image_path.name} carries no channel names; list them under 'markers:' in the manifest",
            path=manifest,
        )
    return tuple(names)


def _build_sample(entry: SampleEntry, model: ManifestModel, root: Path, manifest: Path) -> Sample:
    image_path = root / entry.image
    sample_id = entry.id or image_path.name.split(".")[0]
    axes = entry.axes or model.axes
    names = _channel_names(entry.markers or model.markers, image_path, entry.key, axes, manifest)
    available = tuple(entry.available or model.available.get(sample_id, []))
    unknown = set(available) - set(names)
    if unknown:
        raise FluosegError(
            f"sample {sample_id!r} lists available markers {sorted(unknown)} that are not among its "
            f"channels {list(names)}",
            path=manifest,
        )
    masks = _mask_sources(entry.masks if entry.masks is not None else model.masks,
                          model.classes, root, sample_id, manifest)
    labels_template = entry.labels or model.labels
    points_template = entry.points or model.points
    return Sample(
        id=sample_id,
        image_path=image_path,
        image_key=entry.key,
        channel_names=names,
        group=entry.group or model.groups.get(sample_id, ""),
        available=available,
        masks=masks,
        labels_path=root / _fill(labels_template, sample_id, "labels", manifest) if labels_template else None,
        points_path=root / _fill(points_template, sample_id, "points", manifest) if points_template else None,
        pixel_size=_pixel_size(entry.pixel_size_um if entry.pixel_size_um is not None else model.pixel_size_um,
                               manifest),
        axes=axes,
    )


def load_manifest(path: str | Path) -> Manifest:
    """Read a dataset manifest and check that every file it names exists.

    Raises
    ------
    FluosegError
        For invalid YAML or keys, duplicate sample ids, an empty glob, or missing files.
    """
    path = Path(path).resolve()
    raw = read_yaml(path)
    _refuse_nul(raw, path)
    try:
        model = ManifestModel.model_validate(raw)
    except ValidationError as exc:
        raise FluosegError(format_validation_error(exc), path=path) from None
    root = (path.parent / model.root).resolve()
    entries = list(model.samples)
    if model.images is not None:
        found = _glob(root, model.images, path)
        if not found:
            raise FluosegError(f"'images: {model.images}' matches no file under {root}", path=path)
        entries += [SampleEntry(image=str(p.relative_to(root))) for p in found]
    samples = [_build_sample(entry, model, root, path) for entry in entries]
    ids = [s.id for s in samples]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise FluosegError(f"duplicate sample ids {duplicates}; give each sample a unique 'id'", path=path)
    for sample in samples:
        files = [sample.image_path, *(p for p, _ in sample.masks.values())]
        files += [p for p in (sample.labels_path, sample.points_path) if p]
        for file in files:
            with os_errors_as_user_errors(file, "read"):  # e.g. a name too long for the disk
                found_file = file.exists()
            if not found_file:
                raise FluosegError(f"sample {sample.id!r}: file {file} not found; fix the manifest", path=path)
    classes = model.classes or list(dict.fromkeys(c for s in samples for c in s.masks))
    return Manifest(path=path, samples=tuple(samples), classes=tuple(classes))

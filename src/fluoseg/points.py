"""Point annotations derived from instance labels: the work behind ``fluoseg points``.

LACSS's weakly supervised experiments train from one point per cell plus a foreground
mask. To run them on a dataset with instance labels, this writes one point per object
(its centroid, snapped to the object's nearest pixel when the centroid falls outside it)
as ``OUT/points/<id>.csv`` and a manifest ``OUT/manifest.yaml`` that is the source
manifest plus ``points: points/{id}.csv``. The labels stay in that manifest: they give
the foreground (unless the samples have ``masks:``) and the test-set truth; a run with
``instance.supervision: points`` trains from the points and the foreground only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fluoseg.config import read_yaml
from fluoseg.data.manifest import load_manifest
from fluoseg.errors import FluosegError
from fluoseg.io import prepare_output_dir, read_labels, write_text_atomically
from fluoseg.io.points import write_points_csv
from fluoseg.models.detection.targets import points_from_labels

POINTS_FOLDER = "points"


def derive_points(manifest: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write one point per labelled object of every sample, and a manifest using them.

    Parameters
    ----------
    manifest
        Dataset manifest whose samples all have ``labels:`` (2D instance label images).
    out
        Output folder: ``points/<id>.csv`` (columns ``y,x``) and ``manifest.yaml``.
    overwrite
        Replace the files of an existing, non-empty output folder.

    Returns
    -------
    pathlib.Path
        The new manifest.

    Raises
    ------
    FluosegError
        For a sample without labels or with labels that are not a 2D image, or an output
        folder that exists and is not empty without ``overwrite``.
    """
    out = prepare_output_dir(out, overwrite=overwrite, what="points folder").resolve()
    data = load_manifest(manifest)
    missing = [s.id for s in data.samples if s.labels_path is None]
    if missing:
        raise FluosegError(f"samples {missing} have no instance labels to derive points from; add 'labels:' "
                           "to the manifest", path=data.path)
    derived = []
    for sample in data.samples:
        labels = read_labels(sample.labels_path)
        if labels.ndim != 2:
            raise FluosegError(f"points are derived from 2D labels; this one has shape {labels.shape}",
                               path=sample.labels_path)
        derived.append((sample.id, points_from_labels(labels, method="inside")))
    (out / POINTS_FOLDER).mkdir(parents=True, exist_ok=True)
    for sample_id, points in derived:
        write_points_csv(out / POINTS_FOLDER / f"{sample_id}.csv", points, overwrite=overwrite)
    path = out / "manifest.yaml"
    write_text_atomically(path, yaml.safe_dump(_with_points(read_yaml(data.path), data.path, out), sort_keys=False),
                          overwrite=overwrite)
    return path


def _with_points(raw: dict[str, Any], source: Path, out: Path) -> dict[str, Any]:
    """The source manifest with an absolute root and every sample's points in ``out``."""
    result = dict(raw)
    result["root"] = str((source.parent / str(raw.get("root", "."))).resolve())
    result["points"] = str(out / POINTS_FOLDER / "{id}.csv")
    if "samples" in result:
        result["samples"] = [{k: v for k, v in entry.items() if k != "points"} for entry in result["samples"]]
    return result

"""One annotated sample: where its image and annotations live and what its channels are."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.io import ImageData, read_image, read_labels, read_mask
from fluoseg.io.points import read_points_csv


@dataclass(frozen=True)
class Sample:
    """A sample of a dataset manifest.

    Attributes
    ----------
    id
        Unique sample id (file stem by default).
    group
        Split unit: samples of one group always land in the same split (default: the id).
    image_path, image_key
        The image file and, for container formats (HDF5), the group/dataset inside it.
    channel_names
        Marker name of each image channel, in file order.
    available
        Markers of this sample that may be used (a heterogeneous panel assigns each sample
        its own subset); default all of ``channel_names``.
    masks
        Per-class mask sources: class name -> (path, channel index or None). A multi-class
        mask file appears once per class with its channel index.
    labels_path
        Instance label image, if any.
    points_path
        Point annotations (CSV with columns ``y,x``, one point per object), if any.
    pixel_size
        Pixel size in µm per spatial axis, if known.
    axes
        Axis order of the image file when it carries none (e.g. ``"CYX"``).
    """

    id: str
    image_path: Path
    channel_names: tuple[str, ...]
    group: str = ""
    image_key: str | None = None
    available: tuple[str, ...] = ()
    masks: dict[str, tuple[Path, int | None]] = field(default_factory=dict)
    labels_path: Path | None = None
    points_path: Path | None = None
    pixel_size: tuple[float, ...] | None = None
    axes: str | None = None

    @property
    def split_group(self) -> str:
        """The unit a train/val/test split assigns as a whole."""
        return self.group or self.id

    @property
    def usable_markers(self) -> tuple[str, ...]:
        """Markers of this sample the model may see."""
        return self.available or self.channel_names

    def read_image(self, *, lazy: bool = False) -> ImageData:
        """Read the image and check its channel count against the manifest's marker names."""
        image = read_image(self.image_path, axes=self.axes, key=self.image_key, lazy=lazy)
        if image.n_channels != len(self.channel_names):
            raise FluosegError(
                f"image has {image.n_channels} channels but the manifest names "
                f"{len(self.channel_names)} markers {list(self.channel_names)}; "
                "list one marker name per channel",
                path=self.image_path,
            )
        return image

    def read_masks(self, classes: list[str] | tuple[str, ...], spatial_shape: tuple[int, ...]) -> np.ndarray:
        """Stack the masks of ``classes`` into ``(n_classes, *spatial_shape)`` uint8 0/1.

        Raises
        ------
        FluosegError
            If a class has no mask in this sample or a mask's shape differs from the image's.
        """
        cache: dict[Path, np.ndarray] = {}
        stacked = np.zeros((len(classes),) + tuple(spatial_shape), dtype=np.uint8)
        for i, name in enumerate(classes):
            if name not in self.masks:
                raise FluosegError(
                    f"sample {self.id!r} has no mask for class {name!r} (it has {sorted(self.masks)})",
                    path=self.image_path,
                )
            path, channel = self.masks[name]
            if path not in cache:
                cache[path] = read_mask(path)
            mask = cache[path]
            if channel is None:
                if mask.shape[0] != 1:
                    raise FluosegError(
                        f"mask file has {mask.shape[0]} channels; give one file per class "
                        "or list the classes in channel order",
                        path=path,
                    )
                channel = 0
            if channel >= mask.shape[0]:
                raise FluosegError(
                    f"mask file has {mask.shape[0]} channels but class {name!r} expects channel {channel}; "
                    "the manifest's class list is longer than the file",
                    path=path,
                )
            if tuple(mask.shape[1:]) != tuple(spatial_shape):
                raise FluosegError(
                    f"mask shape {tuple(mask.shape[1:])} differs from image shape {tuple(spatial_shape)} "
                    f"of {self.image_path.name}; masks must match their image pixel for pixel",
                    path=path,
                )
            stacked[i] = mask[channel]
        return stacked

    def read_labels(self, spatial_shape: tuple[int, ...]) -> np.ndarray:
        """The instance label image, checked against the image shape."""
        if self.labels_path is None:
            raise FluosegError(f"sample {self.id!r} has no instance labels", path=self.image_path)
        labels = read_labels(self.labels_path)
        if tuple(labels.shape) != tuple(spatial_shape):
            raise FluosegError(
                f"label shape {tuple(labels.shape)} differs from image shape {tuple(spatial_shape)}",
                path=self.labels_path,
            )
        return labels

    def read_points(self, spatial_shape: tuple[int, ...]) -> np.ndarray:
        """The ``(n, 2)`` ``(y, x)`` point annotations, checked to lie inside the image."""
        if self.points_path is None:
            raise FluosegError(f"sample {self.id!r} has no point annotations; add 'points:' to the manifest",
                               path=self.image_path)
        return read_points_csv(self.points_path, spatial_shape[-2:])

    def read_foreground(self, spatial_shape: tuple[int, ...]) -> np.ndarray:
        """The foreground ``(Y, X)`` uint8: the union of the sample's class masks, else its labels > 0.

        Raises
        ------
        FluosegError
            If the sample has neither masks nor labels.
        """
        if self.masks:
            return (self.read_masks(list(self.masks), spatial_shape) > 0).any(axis=0).astype(np.uint8)
        if self.labels_path is not None:
            return (self.read_labels(spatial_shape) > 0).astype(np.uint8)
        raise FluosegError(f"sample {self.id!r} has points but no foreground; give 'masks:' or 'labels:' in the "
                           "manifest", path=self.image_path)


"""Prediction on image files: the work behind ``fluoseg predict``.

Outputs per input image ``NAME.*`` in the output folder:

- ``NAME.tif`` (or ``.zarr``): uint8 masks ``(n_classes, [Z], Y, X)``, one channel per class,
  the class names stored as channel names;
- ``NAME_probabilities.tif`` (or ``.zarr``) with ``probabilities=True``: float32 class
  probabilities of the same shape;
- ``NAME_objects.csv`` with ``objects=True`` (instance models): one row per object with its
  area, centroid, bounding box, eccentricity and the intensity of every named channel
  (:func:`fluoseg.objects.object_table`), and for detection models its detection ``score``
  (what COCO AP ranks by); their ``NAME_probabilities.tif`` is the score map (each object's
  pixels hold its score);
- ``NAME_uncertainty.tif`` (or ``.zarr``) with ``uncertainty=True``: float32 per-pixel
  uncertainty ``([Z], Y, X)`` from repeated predictions (:mod:`fluoseg.uncertainty`), and
  one row per image in ``uncertainty.csv`` (:data:`UNCERTAINTY_TABLE`) with its mean.

Instance labels of large images (a Zarr output, or more than :data:`BLOCKWISE_MIN_PIXELS`
pixels) are decoded block by block (:mod:`fluoseg.instance.blockjobs`): the maps stream
into a work folder ``NAME.work`` next to the output, each block is decoded with a halo of
context and the blocks are stitched, so memory stays bounded; the labels equal whole-image
decoding up to renumbering when the halo covers the largest object plus the decoder's
context. The work folder records finished blocks: after an interruption ``resume`` continues
from them, and it is removed when the output is complete. With a Dask client
(:class:`BlockOptions`) the network pass runs on its workers in bands of rows
(:mod:`fluoseg.bandjobs`; bit for bit the single-process maps, finished bands recorded) and
the blocks are decoded there too; Zarr/NGFF outputs of semantic models share out their
pass the same way.

Other formats of the masks or labels, for viewers (:data:`OUTPUT_FORMATS`): ``ome-tiff``
(``NAME.ome.tif``, tiled with pyramid levels for large images), ``geojson``
(``NAME.geojson``, QuPath objects), ``roi`` (``NAME_rois.zip``, a Fiji ROI set) and ``ngff``
(``NAME.ome.zarr``: the input image as a multiscale OME-NGFF 0.5 pyramid with the prediction
as label images ``labels/<class>`` (one 0/1 image per class of masks, ``labels/objects`` for
instance labels), each a pyramid with ``image-label`` metadata, for napari, QuPath and MoBIE).
An output never replaces its input image.

All output paths are checked before any work starts, so a refused overwrite costs nothing
and never leaves a partial result.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from fluoseg.bandjobs import (BandJob, ImageSource, band_overhead, decode_in_windows, default_band_rows, plan_bands,
                              run_bands, worker_count)
from fluoseg.errors import FluosegError
from fluoseg.infer import PredictOptions, Segmenter
from fluoseg.instance.blockjobs import decode_blocks, open_work, write_blocks
from fluoseg.instance.blocks import plan_blocks
from fluoseg.instance.scale import scale_factor
from fluoseg.instance.stitch3d import StitchedSlices
from fluoseg.io import ImageData, create_output, read_image, supported_suffixes, write_csv_atomically, write_image
from fluoseg.io.ngff import mask_labels, write_ngff_image
from fluoseg.io.objects import write_geojson, write_imagej_rois
from fluoseg.io.pyramid import write_pyramidal_ome_tiff
from fluoseg.objects import object_table
from fluoseg.tasks import ObjectPredictor
from fluoseg.uncertainty import UncertaintyOptions, count_passes, pixel_uncertainty

MASK_SUFFIX = ""
PROBABILITY_SUFFIX = "_probabilities"
OBJECTS_SUFFIX = "_objects.csv"
UNCERTAINTY_SUFFIX = "_uncertainty"
UNCERTAINTY_TABLE = "uncertainty.csv"
"""Per-image mean uncertainty, one row per input, in the output folder."""
UNCERTAINTY_FIELDS = ("image", "method", "measure", "passes", "mean_uncertainty")
OUTPUT_FORMATS = {"tif": ".tif", "zarr": ".zarr", "ome-tiff": ".ome.tif", "geojson": ".geojson", "roi": "_rois.zip",
                  "ngff": ".ome.zarr"}
"""``--format`` -> file name ending of the masks or labels (probabilities stay TIFF or Zarr)."""
ON_DISK_FORMATS = ("zarr", "ngff")
"""Formats whose probabilities (and uncertainty) are Zarr too, and whose masks stream to disk."""
INSTANCE_LABELS = "objects"
"""Name of the label image of instance labels in an NGFF output (``labels/objects``)."""
OBJECT_FORMATS = ("geojson", "roi")
WORK_SUFFIX = ".work"
BLOCKWISE_MIN_PIXELS = 4096 * 4096
"""Instance labels of images with more pixels than this (all planes) are decoded blockwise."""
DEFAULT_BLOCK_DEPTH = 4
"""Planes per block of stitched z-stacks: windows of 6 planes decode 4 (1.5x the work of one pass)."""
DEFAULT_OBJECT_EXTENT = 64
"""Largest object extent assumed for the default halo, in pixels (see :func:`default_halo`)."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockOptions:
    """How instance labels are decoded block by block (see :mod:`fluoseg.instance.blockjobs`).

    Attributes
    ----------
    block_size
        Core side in pixels (Y and X); also the chunk side of Zarr label outputs, so that
        every chunk has one writer.
    block_depth
        Planes per block of z-stacks whose slices are stitched into 3D objects (each window
        adds one plane above and below, the context of the stitching); one plane when they
        are not.
    halo
        Context on each side in pixels; None: :func:`default_halo` of the model.
    min_pixels
        Images with more pixels than this are decoded blockwise whatever the output format.
    resume
        Continue the work folder an interrupted prediction left.
    client
        A ``dask.distributed.Client`` whose workers run the network pass in bands of rows
        and decode the blocks (:mod:`fluoseg.bandjobs`); None: this process.
    band_rows
        Rows per band of the network pass on the workers (rounded up to whole chunks);
        None: two bands per worker, at least a row of tiles tall
        (:func:`fluoseg.bandjobs.default_band_rows`).
    """

    block_size: int = 1024
    block_depth: int = DEFAULT_BLOCK_DEPTH
    halo: int | None = None
    min_pixels: int = BLOCKWISE_MIN_PIXELS
    resume: bool = False
    client: Any = None
    band_rows: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.block_size, bool) or int(self.block_size) < 8:
            raise FluosegError(f"the block size must be at least 8 pixels, got {self.block_size!r}")
        if isinstance(self.block_depth, bool) or int(self.block_depth) < 1:
            raise FluosegError(f"the block depth must be at least 1 plane, got {self.block_depth!r}")
        if self.halo is not None and (isinstance(self.halo, bool) or int(self.halo) < 0):
            raise FluosegError(f"the halo must be a number of pixels >= 0, got {self.halo!r}")
        if self.band_rows is not None and (isinstance(self.band_rows, bool) or int(self.band_rows) < 1):
            raise FluosegError(f"the band height must be at least 1 row, got {self.band_rows!r}")


def default_halo(task: Any) -> int:
    """The halo of blockwise decoding for an instance task: largest object extent plus decoder context.

    The extent is twice the model's training diameter (objects vary about twofold in size),
    at least :data:`DEFAULT_OBJECT_EXTENT`; the border-class decoder adds its border band
    (:mod:`fluoseg.instance.blockwise` states why these bounds suffice).
    """
    diameter = task.target_diameter
    extent = max(DEFAULT_OBJECT_EXTENT, 2 * math.ceil(diameter)) if diameter else DEFAULT_OBJECT_EXTENT
    return extent + int(getattr(task, "erosion", 0))


def work_folder(masks: Path) -> Path:
    """The work folder of an output: ``NAME.work`` beside it."""
    return masks.with_name(f"{image_stem(masks)}{WORK_SUFFIX}")


def image_stem(path: str | Path) -> str:
    """File name without any of its suffixes (``a.ome.tif`` -> ``a``)."""
    return Path(path).name.split(".")[0]


@dataclass(frozen=True)
class PredictionPaths:
    """Where the outputs of one input image go."""

    masks: Path
    probabilities: Path | None
    objects: Path | None = None
    uncertainty: Path | None = None


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Image files of the given paths: files as they are, folders replaced by their image files.

    A folder that is itself an image (``.zarr``) stays one input. Files in a folder are
    taken in name order; hidden files and files of unsupported formats are skipped.

    Raises
    ------
    FluosegError
        For a path that does not exist, or a folder without images.
    """
    suffixes = supported_suffixes()
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FluosegError("input not found; check the path", path=path)
        is_image = any(path.name.lower().endswith(s) for s in suffixes)
        if path.is_dir() and not is_image:
            images = sorted(p for p in path.iterdir()
                            if not p.name.startswith(".") and any(p.name.lower().endswith(s) for s in suffixes))
            if not images:
                raise FluosegError(f"no images in this folder (supported: {', '.join(suffixes)})", path=path)
            found.extend(images)
        else:
            found.append(path)
    return found


def output_paths(images: Sequence[Path], out_dir: Path, *, fmt: str, probabilities: bool,
                 objects: bool = False, uncertainty: bool = False) -> list[PredictionPaths]:
    """Output paths for every input, refusing duplicates (two inputs with the same stem)."""
    if fmt not in OUTPUT_FORMATS:
        raise FluosegError(f"unknown output format {fmt!r}; use one of {list(OUTPUT_FORMATS)}")
    suffix = OUTPUT_FORMATS[fmt]
    probability_suffix = ".zarr" if fmt in ON_DISK_FORMATS else ".tif"
    paths, seen = [], {}
    for image in images:
        stem = image_stem(image)
        if stem in seen:
            raise FluosegError(f"two inputs share the name {stem!r} ({seen[stem]} and {image}); their outputs would collide",
                               path=image)
        seen[stem] = image
        paths.append(PredictionPaths(
            masks=out_dir / f"{stem}{MASK_SUFFIX}{suffix}",
            probabilities=out_dir / f"{stem}{PROBABILITY_SUFFIX}{probability_suffix}" if probabilities else None,
            objects=out_dir / f"{stem}{OBJECTS_SUFFIX}" if objects else None,
            uncertainty=out_dir / f"{stem}{UNCERTAINTY_SUFFIX}{probability_suffix}" if uncertainty else None,
        ))
    inputs = {image.resolve(): image for image in images}
    for target in paths:
        for output in (target.masks, target.probabilities, target.uncertainty):
            if output is not None and output.resolve() in inputs:
                raise FluosegError(f"the output {output.name} would replace this input image; choose another --out "
                                   "folder", path=inputs[output.resolve()])
    return paths


def check_writable(paths: Sequence[PredictionPaths], *, overwrite: bool, others: Sequence[Path] = ()) -> None:
    """Refuse up front when an output (of an image, or one of ``others``) exists and ``overwrite`` is not set."""
    if overwrite:
        return
    for path in [q for p in paths for q in (p.masks, p.probabilities, p.objects, p.uncertainty)] + list(others):
        if path is not None and path.exists():
            raise FluosegError("output exists; pass --overwrite to replace it", path=path)


def check_work_folders(paths: Sequence[PredictionPaths], *, resume: bool) -> list[Path]:
    """Outputs whose work is finished: ``resume`` skips them; without it a left work folder is an error.

    Returns
    -------
    list of Path
        With ``resume``, the mask outputs that exist (done: outputs are committed whole).

    Raises
    ------
    FluosegError
        Without ``resume``, for the work folder an interrupted prediction left.
    """
    done = []
    for p in paths:
        work = work_folder(p.masks)
        if work.exists() and not resume:
            raise FluosegError("an interrupted prediction left this work folder; pass --resume to continue it, "
                               "or delete the folder to start over", path=work)
        if resume and p.masks.exists():
            done.append(p.masks)
    return done


def resolve_channel_names(image: ImageData, channel_names: Sequence[str] | None,
                          markers: Sequence[str] | None, panel: Sequence[str] = (),
                          aliases: dict[str, str] | None = None) -> tuple[str, ...]:
    """Channel names of an image file, under the model's names for them.

    Names come from ``channel_names`` when given, else from the file's metadata, and are
    renamed by ``aliases`` (file name -> model name, e.g. ``{"DAPI": "DNA"}``). A file
    without names may be named by ``markers`` when it has exactly that many channels, and a
    single unnamed channel given to a one-marker model (``panel``) is that marker.
    """
    names = tuple(channel_names) if channel_names else image.channel_names
    if names and aliases:
        names = tuple(aliases.get(n, n) for n in names)
    if not names:
        if markers and len(markers) == image.n_channels:
            return tuple(markers)
        if image.n_channels == 1 and len(panel) == 1:
            return tuple(panel)
        raise FluosegError(
            f"the image has {image.n_channels} channel(s) but no marker names; pass --channel-names "
            "with one name per channel", path=image.path)
    if len(names) != image.n_channels:
        raise FluosegError(f"{len(names)} channel names given for an image with {image.n_channels} channels; "
                           "give one name per channel", path=image.path)
    return names


def check_inputs(segmenter: Segmenter, images: Sequence[Path], options: PredictOptions, *,
                 channel_names: Sequence[str] | None = None, axes: str | None = None,
                 aliases: dict[str, str] | None = None) -> None:
    """Check every input's channels against the model before any prediction starts.

    A mistake in the tenth file of a folder (an unknown marker, a missing name) then costs
    nothing, and no output of the first nine is written in vain.
    """
    for path in images:
        image = read_image(path, axes=axes, lazy=True)
        names = resolve_channel_names(image, channel_names, options.markers, segmenter.panel.names, aliases)
        segmenter.select_markers(names, options.markers, source=str(path))


def predict_file(
    segmenter: Segmenter,
    image_path: Path,
    paths: PredictionPaths,
    options: PredictOptions,
    *,
    channel_names: Sequence[str] | None = None,
    axes: str | None = None,
    diameter_um: float | None = None,
    overwrite: bool = False,
    aliases: dict[str, str] | None = None,
    blocks: BlockOptions | None = None,
) -> Path:
    """Segment one image file and write its outputs atomically; returns the mask (or label) path.

    Semantic runs write per-class masks; instance runs write a label image (uint16, or
    uint32 beyond 65535 objects) and, with probabilities, the decoded maps; regression runs
    (in-silico labelling) write the predicted marker channels as float32.

    Parameters
    ----------
    options
        How to predict; the file's pixel size and name are filled in here.
    diameter_um
        Object diameter in micrometres, converted with the file's pixel size (overrides
        ``options.diameter``).
    aliases
        File channel name -> the model's marker name (``{"DAPI": "DNA"}``).
    blocks
        Blockwise decoding of instance labels (default :class:`BlockOptions`).
    """
    image, names, options = _file_options(segmenter, image_path, options, channel_names=channel_names, axes=axes,
                                          diameter_um=diameter_um, aliases=aliases)
    if segmenter.task_name == "instance":
        blocks = blocks or BlockOptions()
        if _decode_blockwise(segmenter, image, paths, options, blocks):
            return _write_instance_blockwise(segmenter, image, names, paths, options, overwrite, blocks,
                                             ImageSource(str(image_path), axes))
        return _write_instance(segmenter, image, names, paths, options, overwrite)
    if segmenter.task_name == "regression":
        if _output_format(paths.masks) in OBJECT_FORMATS:
            raise FluosegError("predicted marker channels are images, not objects; use --format tif or ome-tiff",
                               path=paths.masks)
        maps = np.asarray(segmenter.predict_probabilities(image.array, names, options), np.float32)
        if _output_format(paths.masks) == "ngff":  # predicted channels are an image, not labels
            return write_ngff_image(paths.masks, maps, axes=image.axes, channel_names=list(segmenter.classes),
                                    pixel_size=image.pixel_size, overwrite=overwrite)
        return write_segmentation(paths.masks, maps, axes=image.axes, channel_names=list(segmenter.classes),
                           pixel_size=image.pixel_size, overwrite=overwrite)
    if _output_format(paths.masks) in ON_DISK_FORMATS:
        blocks = blocks or BlockOptions()
        return _write_semantic_streamed(segmenter, image, names, paths, options, overwrite,
                                        _Distribution(blocks.client, ImageSource(str(image_path), axes),
                                                      blocks.band_rows))
    meta = dict(axes=image.axes, channel_names=list(segmenter.classes), pixel_size=image.pixel_size)
    masks, probabilities = segmenter.predict_masks(image.array, names, options)
    if paths.probabilities is not None:
        write_image(paths.probabilities, np.asarray(probabilities, np.float32), overwrite=overwrite, **meta)
    return write_segmentation(paths.masks, masks, overwrite=overwrite, **meta)


def _file_options(segmenter: Segmenter, image_path: Path, options: PredictOptions, *,
                  channel_names: Sequence[str] | None, axes: str | None, diameter_um: float | None,
                  aliases: dict[str, str] | None) -> tuple[ImageData, tuple[str, ...], PredictOptions]:
    """The lazily read image, its channel names, and the options with its pixel size and name."""
    image = read_image(image_path, axes=axes, lazy=True)
    names = resolve_channel_names(image, channel_names, options.markers, segmenter.panel.names, aliases)
    options = options.replace(pixel_size=image.pixel_size, source=str(image_path))
    if diameter_um is not None:
        options = options.replace(diameter=_diameter_pixels(diameter_um, image))
    return image, names, options


def predict_uncertainty_file(
    segmenter: Segmenter,
    image_path: Path,
    path: Path,
    options: PredictOptions,
    uncertainty: UncertaintyOptions,
    *,
    channel_names: Sequence[str] | None = None,
    axes: str | None = None,
    diameter_um: float | None = None,
    overwrite: bool = False,
    aliases: dict[str, str] | None = None,
) -> dict[str, object]:
    """Write the per-pixel uncertainty map of one image file; returns its row of :data:`UNCERTAINTY_TABLE`.

    The map (float32, the spatial shape of the image, like its labels or one mask channel)
    comes from :func:`fluoseg.uncertainty.pixel_uncertainty` with the same prediction
    options as :func:`predict_file`.
    """
    image, names, options = _file_options(segmenter, image_path, options, channel_names=channel_names, axes=axes,
                                          diameter_um=diameter_um, aliases=aliases)
    array = np.asarray(image.array)
    uncertainty_map = pixel_uncertainty(segmenter, array, names, options, uncertainty)
    write_image(path, uncertainty_map, axes=image.axes[1:], channel_names=None, pixel_size=image.pixel_size,
                overwrite=overwrite)
    return {"image": image_stem(image_path), "method": uncertainty.method, "measure": uncertainty.measure,
            "passes": count_passes(options, uncertainty), "mean_uncertainty": float(uncertainty_map.mean(dtype=np.float64))}


def write_uncertainty_table(out_dir: Path, rows: Sequence[dict[str, object]], *, overwrite: bool = False) -> Path:
    """Write :data:`UNCERTAINTY_TABLE` (one row per image) atomically."""
    return write_csv_atomically(Path(out_dir) / UNCERTAINTY_TABLE, list(rows), fields=list(UNCERTAINTY_FIELDS),
                                overwrite=overwrite)


def _diameter_pixels(diameter_um: float, image: ImageData) -> float:
    """An object diameter in micrometres as pixels of this image."""
    if not image.pixel_size:
        raise FluosegError("--diameter in micrometres needs the pixel size, but the file has none; "
                           "give the diameter in pixels", path=image.path)
    return float(diameter_um) / float(image.pixel_size[-1])


def _write_instance(segmenter: Segmenter, image: ImageData, names: Sequence[str], paths: PredictionPaths,
                    options: PredictOptions, overwrite: bool) -> Path:
    labels, outputs = segmenter.predict_labels(image.array, names, options)
    if paths.objects is not None:
        rows = object_table(labels, np.asarray(image.array), names, pixel_size=image.pixel_size)
        if isinstance(segmenter.task, ObjectPredictor) and rows:  # a detector scores its objects (COCO AP ranks them)
            scores = ndimage.maximum(outputs[0], labels, [row["label"] for row in rows])
            for row, score in zip(rows, np.atleast_1d(scores)):
                row["score"] = round(float(score), 6)
        write_csv_atomically(paths.objects, rows, fields=None if rows else ["label"], overwrite=overwrite)
    if paths.probabilities is not None:
        write_image(paths.probabilities, outputs.astype(np.float32), axes=image.axes, pixel_size=image.pixel_size,
                    overwrite=overwrite)
    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    return write_segmentation(paths.masks, labels.astype(dtype), axes=image.axes[1:], pixel_size=image.pixel_size,
                              overwrite=overwrite, image=image, image_channels=names)


def _rescales(segmenter: Segmenter, options: PredictOptions) -> bool:
    """Whether prediction rescales the image to the model's object size (whole-image work)."""
    target = segmenter.task.target_diameter
    if not target or options.diameter == "off":
        return False
    if options.diameter == "auto":
        return True
    return abs(scale_factor(float(options.diameter), float(target)) - 1.0) > 1e-6


def _decode_blockwise(segmenter: Segmenter, image: ImageData, paths: PredictionPaths, options: PredictOptions,
                      blocks: BlockOptions) -> bool:
    if isinstance(segmenter.task, ObjectPredictor):
        return False  # detectors run tile by tile themselves and paste their objects into one label image
    wanted = _output_format(paths.masks) in ON_DISK_FORMATS or math.prod(image.spatial_shape) > blocks.min_pixels
    if wanted and _rescales(segmenter, options):
        # the estimate of the diameter and the rescaling need the whole image
        log.warning("%s: the model rescales images to its object size (--diameter %s), which needs the whole image; "
                    "decoding it at once (give --diameter off or the diameter in pixels for blockwise decoding)",
                    image.path, options.diameter)
        return False
    return wanted


@dataclass(frozen=True)
class _Distribution:
    """Where the network pass of a large image runs: band tasks on a Dask client's workers
    (:mod:`fluoseg.bandjobs`), or this process."""

    client: Any
    source: ImageSource
    band_rows: int | None = None

    def shares(self, segmenter: Segmenter, options: PredictOptions) -> bool:
        """Whether the pass goes to the workers (there are some, and it needs no resampling)."""
        if self.client is None:
            return False
        if segmenter.resamples(options.pixel_size):
            log.warning("%s: the model resamples this image to its pixel size, which needs the whole image; the "
                        "network pass runs in this process", self.source.path)
            return False
        return True

    def run(self, segmenter: Segmenter, image: ImageData, names: Sequence[str], options: PredictOptions, out: Any,
            *, records: Path | None = None, masks: Any = None) -> None:
        """The pass prepared here (statistics of the whole image), its bands run on the workers."""
        network = segmenter.network_pass(image.array, names, options)
        chunk_rows = math.lcm(int(out.chunks[-2]), int(masks.chunks[-2]) if masks is not None else 1)
        bands = plan_bands(image.spatial_shape, chunk_rows=chunk_rows,
                           band_rows=self.band_rows or default_band_rows(network, worker_count(self.client)))
        job = BandJob(network, self.source, out, bands, records=None if records is None else str(records),
                      decode=None if masks is None else network.decode, decoded=masks)
        log.info("%s: %d bands of the network pass on the workers (%.2fx the tiles of one pass)", self.source.path,
                 len(bands), band_overhead(network, bands))
        run_bands(job, client=self.client, progress=options.progress)


@dataclass(frozen=True)
class _TaskDecoder:
    """The first member's decoding of a maps window (picklable, for block tasks)."""

    task: Any
    channels: int

    def __call__(self, window: np.ndarray) -> np.ndarray:
        return self.task.decode(np.asarray(window[: self.channels]))


def _write_instance_blockwise(segmenter: Segmenter, image: ImageData, names: Sequence[str], paths: PredictionPaths,
                              options: PredictOptions, overwrite: bool, blocks: BlockOptions,
                              source: ImageSource) -> Path:
    """Maps into the work folder, then blocks decoded, linked and written (see the module docstring)."""
    import zarr

    task = segmenter.members[0].task
    spatial = tuple(image.spatial_shape)
    side, halo = int(blocks.block_size), default_halo(task) if blocks.halo is None else int(blocks.halo)
    decoder: Any = _TaskDecoder(task, task.activated_channels())
    if len(spatial) == 2:
        plan = plan_blocks(spatial, block_shape=side, halo=halo)
    elif options.stitch_threshold > 0:
        # slices stitched into 3D objects: blocks of several planes, linked across Z as across Y and X
        decoder = StitchedSlices(decoder, float(options.stitch_threshold))
        plan = plan_blocks(spatial, block_shape=(int(blocks.block_depth), side, side), halo=(1, halo, halo),
                           stitched_axes=(0,))
    else:  # slice-wise decoders: no context along Z, one plane per block
        plan = plan_blocks(spatial, block_shape=(1, side, side), halo=(0, halo, halo))
    spec = {"image": str(image.path), "image_shape": list(image.array.shape), "channels": list(names),
            "markers": list(segmenter.panel.names), "classes": list(segmenter.classes),
            "task": [m.task.state() for m in segmenter.members],
            "options": {"markers": options.markers, "tile_size": options.tile_size, "tta": options.tta,
                        "diameter": options.diameter, "pixel_size": options.pixel_size,
                        "stitch_threshold": options.stitch_threshold}}
    work = work_folder(paths.masks)
    job = open_work(work, spec, plan, decoder, resume=blocks.resume)
    if not job.maps_done:
        channels = sum(m.task.activated_channels() for m in segmenter.members)
        distribution = _Distribution(blocks.client, source, blocks.band_rows)
        if distribution.shares(segmenter, options):
            # band tasks on the workers, each band recorded: a resumed run keeps the finished ones (a
            # fresh work folder has no maps yet, so they are created)
            distribution.run(segmenter, image, names, options, job.open_maps(channels), records=job.bands_path)
        else:
            segmenter.predict_probabilities(image.array, names, options, out=job.create_maps(channels))
        job.mark_maps_done()
    relabelling = decode_blocks(job, client=blocks.client, progress=options.progress)
    dtype = np.uint16 if relabelling.n_objects < 2**16 else np.uint32
    chunks = plan.chunks
    label_axes = image.axes[1:]
    if _output_format(paths.masks) == "zarr":
        with create_output(paths.masks, shape=spatial, dtype=dtype, axes=label_axes, pixel_size=image.pixel_size,
                           chunks=chunks, overwrite=overwrite) as out:
            write_blocks(job, relabelling, out.array, client=blocks.client, progress=options.progress)
        labels: Any = None
    else:
        labels = zarr.create_array(store=str(work / "labels.zarr"), shape=spatial, dtype=dtype, chunks=chunks,
                                   fill_value=0, overwrite=True)
        write_blocks(job, relabelling, labels, client=blocks.client, progress=options.progress)
        write_segmentation(paths.masks, labels, axes=label_axes, pixel_size=image.pixel_size, overwrite=overwrite,
                           image=image, image_channels=names)
    maps = zarr.open_array(str(job.maps_path), mode="r")
    if paths.probabilities is not None:
        write_image(paths.probabilities, maps, axes=image.axes, pixel_size=image.pixel_size, overwrite=overwrite)
    if paths.objects is not None:  # the object table measures whole images
        if labels is None:
            labels = read_image(paths.masks).array[0]
        rows = object_table(np.asarray(labels), np.asarray(image.array), names, pixel_size=image.pixel_size)
        write_csv_atomically(paths.objects, rows, fields=None if rows else ["label"], overwrite=overwrite)
    shutil.rmtree(work, ignore_errors=True)
    return paths.masks


def write_segmentation(path: Path, array: Any, *, axes: str, channel_names: Sequence[str] | None = None,
                       pixel_size: Sequence[float] | None = None, overwrite: bool = False,
                       image: ImageData | None = None, image_channels: Sequence[str] | None = None) -> Path:
    """Write masks ``(n_classes, ...)`` or labels in the format :data:`OUTPUT_FORMATS` gives ``path``'s ending.

    Objects (GeoJSON, ROI sets) carry the class names of masks, or the label ids. An NGFF
    output (``.ome.zarr``) holds ``image`` (needed for it; named ``image_channels``) as a
    multiscale image and the masks or labels as its label images (see the module docstring).
    """
    fmt = _output_format(path)
    if fmt == "ngff":
        if image is None:
            raise FluosegError("an NGFF output holds the image beside its labels; give the image", path=path)
        if "C" in axes:
            labels, values = mask_labels(array, list(channel_names or ()), path=path)
        else:
            labels, values = {INSTANCE_LABELS: array}, {}
        return write_ngff_image(path, image.array, axes=image.axes, channel_names=image_channels,
                                pixel_size=image.pixel_size, labels=labels, label_values=values, overwrite=overwrite)
    if fmt == "geojson":
        return write_geojson(path, array, classes=channel_names, overwrite=overwrite)
    if fmt == "roi":
        return write_imagej_rois(path, array, classes=channel_names, overwrite=overwrite)
    if fmt == "ome-tiff":
        return write_pyramidal_ome_tiff(path, array, axes=axes, channel_names=channel_names, pixel_size=pixel_size,
                                        overwrite=overwrite)
    return write_image(path, array, axes=axes, channel_names=channel_names, pixel_size=pixel_size,
                       overwrite=overwrite)


def _output_format(path: Path) -> str:
    """The format of the longest ending ``path`` has (``.ome.zarr`` is NGFF, not plain Zarr)."""
    endings = sorted(((e, f) for f, e in OUTPUT_FORMATS.items() if f != "tif" and path.name.endswith(e)),
                     key=lambda pair: len(pair[0]))
    return endings[-1][1] if endings else "tif"


def _write_semantic_streamed(segmenter: Segmenter, image: ImageData, names: Sequence[str], paths: PredictionPaths,
                             options: PredictOptions, overwrite: bool, distribution: _Distribution) -> Path:
    """Zarr out: probabilities stream into an on-disk array, masks follow band by band (on
    the workers, each band with its masks, when the prediction is distributed).

    An NGFF output gets its masks from a hidden Zarr beside it, then written as label images.
    """
    shape = (len(segmenter.classes),) + tuple(image.spatial_shape)
    meta = dict(axes=image.axes, channel_names=list(segmenter.classes), pixel_size=image.pixel_size)
    keep_probabilities = paths.probabilities is not None
    stem = image_stem(paths.masks)
    probability_path = paths.probabilities or paths.masks.with_name(f".{stem}{PROBABILITY_SUFFIX}.partial.zarr")
    ngff = _output_format(paths.masks) == "ngff"
    mask_path = paths.masks.with_name(f".{stem}.masks.partial.zarr") if ngff else paths.masks
    with create_output(probability_path, shape=shape, dtype="float32", overwrite=overwrite or not keep_probabilities,
                       **meta) as prob_out, create_output(mask_path, shape=shape, dtype="uint8",
                                                          overwrite=overwrite or ngff, **meta) as mask_out:
        if distribution.shares(segmenter, options):
            distribution.run(segmenter, image, names, options, prob_out.array, masks=mask_out.array)
        else:
            segmenter.predict_probabilities(image.array, names, options, out=prob_out.array)
            for band in plan_bands(image.spatial_shape, chunk_rows=1, band_rows=1024):
                decode_in_windows(segmenter.decode, prob_out.array, mask_out.array, plane=band.plane,
                                  rows=(band.start, band.stop))
        if ngff:
            write_segmentation(paths.masks, mask_out.array, overwrite=overwrite, image=image, image_channels=names,
                               **meta)
            mask_out.discard()
        if not keep_probabilities:
            prob_out.discard()
    return paths.masks

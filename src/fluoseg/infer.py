"""Applying trained models: images of any size and any subset of the trained markers.

A :class:`Segmenter` wraps the network(s) of a run directory together with what they were
trained with (marker panel, classes, normalisation, pixel size, task). It maps an image's
channels onto the model's marker slots by name (:class:`~fluoseg.markers.MarkerSelection`,
resolved once per image), normalises with statistics of the whole image, runs the
overlap-tile scheme (:mod:`fluoseg.tiling`) with the shared batch predictor
(:mod:`fluoseg.predictor`) and returns activated maps, masks or instance labels. How to
predict is one typed :class:`PredictOptions`. A model with a channel-invariant front end
also takes chosen markers outside its panel (:class:`~fluoseg.markers.ChannelFeed`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fluoseg import zoo
from fluoseg.bioimage.package import is_package, load_checkpoints
from fluoseg.data.blank import BLANK_SNR, is_blank
from fluoseg.data.normalize import compute_stats, normalize
from fluoseg.data.resample import resample_image, resample_to_shape, scale_factors
from fluoseg.device import check_precision, resolve_device, resolve_precision
from fluoseg.errors import FluosegError
from fluoseg.instance.scale import estimate_diameter_from_labels, scale_factor
from fluoseg.instance.stitch3d import stitch_slices
from fluoseg.markers import ChannelFeed, MarkerPanel, MarkerSelection
from fluoseg.models.channel_invariant import takes_marker_ids
from fluoseg.network_pass import MemberPass, NetworkPass, Normaliser, decode_outputs
from fluoseg.predictor import symmetries
from fluoseg.run import Checkpoint, Preprocessing, RunDir
from fluoseg.tasks import DetectedObjects, ObjectPredictor, Task
from fluoseg.tiling import TileGeometry, fitted_geometry, geometry_for

DEFAULT_TILE = 572
"""Default network input tile: the MS-ME tile, rounded to what the network accepts."""
AUTO_REFINEMENTS = 2
"""Extra probe passes of ``--diameter auto`` at the zoom the previous one asked for."""
AUTO_TOLERANCE = 1.5
"""A probe whose estimate asks for a zoom within this factor of its own is trusted."""
FRAGMENT_FIT = 0.7
"""A first probe whose objects fit the network's distance map worse than this
(:meth:`~fluoseg.tasks.base.Task.object_fit`; ~0.8 for nuclei seen whole) is
checked for objects cut into pieces at :data:`FRAGMENT_ZOOM`."""
FRAGMENT_ZOOM = 0.5
"""Zoom of the probe that sees pieces of large objects whole (a quarter of the first probe's pixels)."""
FRAGMENT_GROWTH = 1.5
"""The first probe's objects were pieces when the :data:`FRAGMENT_ZOOM` probe measures objects at
least this many times as large that also fit the distance map better (fused small objects fit worse)."""
AUTO_REUSE = 1.25
"""``--diameter auto`` keeps the first probe's maps when the zoom it asks for is within this
factor of 1 (chosen on validation images, see ``bench/results/zoo.md``)."""
SLOT_MODEL_HINT = ("rename the channel or choose a subset of these; only a channel-invariant model "
                   "(model.options.front_end: channel-invariant) can take markers outside its panel")
"""How to fix an unknown marker given to a model with marker slots."""
OPEN_MODEL_HINT = ("rename the channel, or choose the markers to feed with --markers (markers= in Python): "
                   "this channel-invariant model takes chosen markers outside its panel")
"""How to fix an unknown marker given, without a marker choice, to a channel-invariant model."""


@dataclass(frozen=True)
class PredictOptions:
    """How to predict one image (validated when created).

    Attributes
    ----------
    markers
        Markers to use, a subset of the image's and the model's; ``None``: every channel. A
        channel-invariant model also takes chosen markers outside its panel.
    pixel_size
        Image pixel size in µm per spatial axis (or one value); when the model was trained
        at another pixel size the image is resampled for prediction and the result back.
    tile_size
        Network input tile size (rounded to an admissible one); ``None``: 572.
    batch_size
        Tiles per forward pass.
    tta
        Test-time augmentation: ``False`` (none), ``True`` (all 8 flips/rotations) or symmetry
        indices 0-7 (see :func:`fluoseg.predictor.dihedral`); stored as the indices.
    diameter
        Instance models trained with scale normalisation: mean object diameter in pixels,
        ``"auto"`` (the default: estimated from a first pass) or ``"off"`` (no rescaling).
        Models without scale normalisation ignore it.
    stitch_threshold
        Instance models on z-stacks: objects of consecutive slices with at least this IoU
        become one 3D object (:func:`fluoseg.instance.stitch3d.stitch_slices`, Cellpose's
        ``stitch_threshold``); 0 keeps one object per slice.
    blank_snr
        Instance models: an image whose brightest spot stands less than this many noise
        standard deviations above its background (:func:`fluoseg.data.blank.signal_to_noise`)
        is an empty field and gets no objects; 0 turns the check off.
    precision
        Arithmetic of the network: ``auto`` (default: bfloat16 where the device computes it
        natively, else float32), ``float32`` or ``bfloat16`` (:data:`fluoseg.device.PRECISIONS`).
        The output layers and the decoding always run in float32: on the nuclei model bfloat16
        scores as float32 does on the validation images at 1.6x the speed on an AMX CPU
        (``bench/results/precision.md``).
    progress
        Show a progress bar over tiles.
    source
        The file the image came from, for error messages.
    """

    markers: tuple[str, ...] | None = None
    pixel_size: tuple[float, ...] | None = None
    tile_size: int | None = None
    batch_size: int = 1
    tta: bool | tuple[int, ...] = (0,)
    diameter: float | str | None = "auto"
    stitch_threshold: float = 0.25
    blank_snr: float = BLANK_SNR
    precision: str = "auto"
    progress: bool = False
    source: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the fields once, here
        set_(self, "tta", symmetries(self.tta if isinstance(self.tta, bool) else tuple(self.tta)))
        if self.markers is not None:
            set_(self, "markers", tuple(self.markers))
        if self.pixel_size is not None:
            set_(self, "pixel_size", tuple(float(p) for p in self.pixel_size))
        if self.tile_size is not None and (isinstance(self.tile_size, bool) or int(self.tile_size) < 8):
            raise FluosegError(f"the tile size must be an integer of at least 8 pixels, got {self.tile_size!r}")
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise FluosegError(f"the batch size must be a positive integer, got {self.batch_size!r}")
        if isinstance(self.stitch_threshold, bool) or not 0.0 <= self.stitch_threshold <= 1.0:
            raise FluosegError(f"the stitching threshold is an IoU between 0 and 1 (0: no stitching), "
                               f"got {self.stitch_threshold!r}")
        if isinstance(self.blank_snr, bool) or not (np.isfinite(self.blank_snr) and self.blank_snr >= 0):
            raise FluosegError(f"the blank-field threshold must be a number >= 0 (0: no check), got {self.blank_snr!r}")
        check_precision(self.precision)
        if self.diameter is None:
            set_(self, "diameter", "off")
        if self.diameter not in ("auto", "off"):
            if isinstance(self.diameter, str) or not (np.isfinite(self.diameter) and self.diameter > 0):
                raise FluosegError(f"the diameter must be a positive number of pixels, 'auto' or 'off', "
                                   f"got {self.diameter!r}")

    def replace(self, **changes: Any) -> PredictOptions:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _options(options: PredictOptions | None, settings: dict[str, Any]) -> PredictOptions:
    if options is None:
        return PredictOptions(**settings)
    return options.replace(**settings) if settings else options


@dataclass
class Member:
    """One trained network and the metadata it needs at inference.

    Its task says how its logits are activated (e.g. softmax) and decoded (masks or labels).
    """

    model: nn.Module
    panel: MarkerPanel
    classes: tuple[str, ...]
    preprocess: Preprocessing
    task: Task

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: torch.device | str = "cpu") -> Member:
        """Rebuild the network of a checkpoint with its weights, and its task."""
        return cls(model=checkpoint.build_model(device), panel=MarkerPanel(checkpoint.markers),
                   classes=checkpoint.classes, preprocess=checkpoint.preprocess, task=checkpoint.build_task())


class Segmenter:
    """The trained network(s) of a run, ready to segment images.

    Parameters
    ----------
    members
        Networks of the run; their class lists are disjoint and together give ``classes``.
    """

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.panel = self.members[0].panel
        self.classes = tuple(c for m in self.members for c in m.classes)
        self.task = self.members[0].task
        self.task_name = self.task.name

    @classmethod
    def load(cls, run_dir: str | Path, *, checkpoint: str = "best", device: str = "auto") -> Segmenter:
        """Load the ``best`` (or ``last``) checkpoint of every member of a run directory.

        ``run_dir`` may also be a bioimage.io package exported by fluoseg (``fluoseg export``):
        its networks and metadata are those of the run's exported checkpoint. A name that is
        not an existing path is looked up among the pretrained models (:meth:`pretrained`),
        so ``fluoseg predict nuclei ...`` works like a run directory.
        """
        if not Path(run_dir).exists() and "/" not in str(run_dir) and not Path(run_dir).suffix:
            return cls.pretrained(str(run_dir), device=device)
        torch_device = resolve_device(device)
        if zoo.is_zoo_folder(run_dir):  # a shipped model's folder given as a path
            checkpoints = [zoo.load_folder(run_dir)]
        elif is_package(run_dir):
            checkpoints = load_checkpoints(run_dir)
        else:
            checkpoints = RunDir.open(run_dir).load_all(checkpoint)
        return cls([Member.from_checkpoint(c, torch_device) for c in checkpoints])

    @classmethod
    def pretrained(cls, name: str, *, device: str = "auto") -> Segmenter:
        """A model shipped with fluoseg, e.g. ``Segmenter.pretrained("nuclei").predict_labels(image)``.

        ``fluoseg models`` lists the names and their cards (:mod:`fluoseg.zoo`).
        """
        return cls([Member.from_checkpoint(zoo.load(name), resolve_device(device))])

    def tile_geometry(self, member: Member, tile_size: int | None, image_shape: tuple[int, ...] | None = None
                      ) -> TileGeometry:
        """Tiling geometry of a member network for a requested input tile size.

        With no requested size, :data:`DEFAULT_TILE`, shrunk for an image (``image_shape``, at
        the model's resolution) that a smaller tile covers (:func:`fluoseg.tiling.fitted_geometry`;
        the same prediction at a fraction of the cost).
        """
        if tile_size is None and image_shape is not None:
            return fitted_geometry(member.model, DEFAULT_TILE, image_shape)
        return geometry_for(member.model, tile_size or DEFAULT_TILE)

    def channel_names_for(self, image: Any, channel_names: Sequence[str] | None, *, source: str | None = None
                          ) -> tuple[str, ...]:
        """The image's channel names; a single unnamed channel given to a one-marker model is that marker."""
        if channel_names is not None:
            return tuple(channel_names)
        if image.shape[0] == 1 and len(self.panel) == 1:
            return self.panel.names
        raise FluosegError(f"the image has {image.shape[0]} channel(s) but no marker names; name them (the model "
                           f"knows {list(self.panel.names)})", path=source)

    @property
    def takes_any_marker(self) -> bool:
        """Whether the networks take markers outside the panel (channel-invariant front ends)."""
        return all(takes_marker_ids(member.model) for member in self.members)

    def parse_markers(self, markers: str | Sequence[str], *, source: str | None = None) -> tuple[str, ...]:
        """Validate a marker choice (``"a,b"`` or names): the panel's markers in panel order,
        then, for a channel-invariant model, the names outside the panel.

        Raises
        ------
        FluosegError
            For an empty choice, or a name outside the panel given to a model with marker slots.
        """
        return self.panel.parse(markers, source=source, allow_unknown=self.takes_any_marker, hint=SLOT_MODEL_HINT)

    def select_markers(self, channel_names: Sequence[str], markers: Sequence[str] | None = None, *,
                       source: str | None = None) -> MarkerSelection | ChannelFeed:
        """Resolve which image channels feed the model and how.

        Channels the task predicts (in-silico labelling targets) are never inputs. Channels
        go into the model's marker slots (:class:`MarkerSelection`), except when a
        channel-invariant model is given a choice of ``markers`` that names one outside its
        panel: the chosen channels are then fed as they are (:class:`ChannelFeed`), each
        with its marker's embedding row (the default row for unknown markers). Markers of
        the panel alone keep the slot path, so their predictions do not change. Without a
        choice, an unknown channel name is an error for every model: feeding a marker the
        model never saw is opted into.
        """
        ignored = set(self.task.ignored_channels)
        use = None if markers is None else [m for m in markers if m not in ignored]
        if use is not None and not set(self.parse_markers(use, source=source)) <= set(self.panel.names):
            return ChannelFeed.resolve(self.panel, channel_names, use=use, ignore=ignored, source=source)
        hint = OPEN_MODEL_HINT if self.takes_any_marker else SLOT_MODEL_HINT
        return MarkerSelection.resolve(self.panel, channel_names, use=use, ignore=ignored, source=source, hint=hint)

    def predict_probabilities(self, image: Any, channel_names: Sequence[str] | None = None,
                              options: PredictOptions | None = None, *, out: Any = None, **settings: Any) -> Any:
        """Activated outputs (class probabilities for semantic tasks) ``(n, [Z], Y, X)``.

        Parameters
        ----------
        image
            ``(C, [Z], Y, X)`` array-like (numpy or lazy zarr); read tile by tile.
        channel_names
            Marker name of each image channel (may be omitted for a one-channel image and a
            one-marker model).
        options
            How to predict; ``settings`` (the fields of :class:`PredictOptions`) override it.
        out
            Optional writable ``(n, [Z], Y, X)`` float32 array (e.g. zarr) to stream into.
        """
        options = _options(options, settings)
        self._refuse_detector(options)  # before any resampling
        spatial = tuple(image.shape[1:])
        image, resampled = self._to_model_resolution(image, options.pixel_size)
        network = self.network_pass(image, channel_names, options)
        if not resampled:
            return network.run(image, out, progress=options.progress)
        merged = resample_to_shape(network.run(image, progress=options.progress), spatial, kind="probabilities")
        return _into(merged, out)

    def network_pass(self, image: Any, channel_names: Sequence[str] | None = None,
                     options: PredictOptions | None = None, **settings: Any) -> NetworkPass:
        """The prepared network pass over ``image`` (at the model's resolution): channels
        resolved and whole-image statistics computed once, to run whole or band by band
        (:mod:`fluoseg.network_pass`).

        Raises
        ------
        FluosegError
            For a detection model (it predicts objects, not maps), unusable channels, or an
            image with NaN or infinite pixels.
        """
        options = _options(options, settings)
        self._refuse_detector(options)
        names = self.channel_names_for(image, channel_names, source=options.source)
        selection = self.select_markers(names, options.markers, source=options.source)
        parts = []
        for member in self.members:
            prep = member.preprocess
            stats = compute_stats(image, method=prep.normalization, percentiles=tuple(prep.percentiles))
            if not stats.is_finite:
                raise FluosegError("image contains NaN or infinite pixels; replace them (e.g. with 0) before prediction",
                                   path=options.source)
            parts.append(MemberPass(
                model=member.model, task=member.task, geometry=self.tile_geometry(member, options.tile_size, image.shape),
                transform=Normaliser(stats, prep.normalization, selection, options.source),
                symmetries=tuple(options.tta), batch_size=options.batch_size, member_markers=member.panel.names,
                # resolved here, once: band tasks on other machines then compute in the same arithmetic
                precision=resolve_precision(options.precision, next(member.model.parameters()).device)))
        return NetworkPass(members=tuple(parts), shape=tuple(int(s) for s in image.shape))

    def _refuse_detector(self, options: PredictOptions) -> None:
        if isinstance(self.task, ObjectPredictor):
            raise FluosegError("a detection model predicts objects, not probability maps; ask for labels "
                               "(predict_labels, or fluoseg predict without a semantic output)", path=options.source)

    def set_decoding(self, **parameters: float) -> None:
        """Change decoding parameters of every member's task (e.g. ``h=1.5, min_size=20``).

        Raises
        ------
        FluosegError
            For a parameter the task does not have (the message lists those it has).
        """
        from fluoseg.tasks import task_from_state

        for member in self.members:
            state = member.task.state()
            unknown = sorted(set(parameters) - set(state) - {"name"})
            if unknown:
                known = sorted(k for k in state if k not in ("name", "method", "class_weights", "classes"))
                raise FluosegError(f"decoding parameter(s) {unknown} do not apply to this model; it has {known}")
            member.task = task_from_state({**state, **parameters})
        self.task = self.members[0].task

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Activated outputs of all members -> masks ``(n_classes, ...)``, labels, or predicted channels."""
        return decode_outputs([member.task for member in self.members], outputs)

    def predict_masks(self, image: Any, channel_names: Sequence[str] | None = None,
                      options: PredictOptions | None = None, **settings: Any) -> tuple[np.ndarray, Any]:
        """Per-class uint8 masks and the probabilities they come from (semantic tasks)."""
        probabilities = self.predict_probabilities(image, channel_names, options, **settings)
        return self.decode(np.asarray(probabilities)), probabilities

    def predict_labels(self, image: Any, channel_names: Sequence[str] | None = None,
                       options: PredictOptions | None = None, **settings: Any) -> tuple[np.ndarray, np.ndarray]:
        """Instance labels ``([Z], Y, X)`` and the activated maps they were decoded from.

        With a model trained with scale normalisation (``instance.target_diameter``) the image
        is rescaled so its objects get the training size (:func:`fluoseg.instance.scale.scale_factor`,
        the rule training used); the maps are resampled back and the labels grown over them
        (:meth:`~fluoseg.tasks.base.Task.regrid_labels`). The diameter is
        ``options.diameter`` in pixels, or estimated from a first prediction at the original
        scale (``"auto"``, the default); ``"off"`` predicts at the original scale. An empty
        field (``options.blank_snr``) gets no objects, and no diameter is estimated on it.
        The objects of a z-stack's slices are linked into 3D objects by their overlap
        (``options.stitch_threshold``).
        """
        options = _options(options, settings)
        blank = options.blank_snr > 0 and is_blank(image, threshold=options.blank_snr)
        if isinstance(self.task, ObjectPredictor):
            if blank:  # nothing to find: the detector is not run
                spatial = tuple(image.shape[1:])
                return np.zeros(spatial, np.int32), np.zeros((1,) + spatial, np.float32)
            found = self.detect_objects(image, channel_names, options)
            return found.labels, found.score_map
        if blank:
            options = options.replace(diameter="off")
        outputs, decoded, rescaled = self._model_scale_pass(image, channel_names, options)
        labels = self.decode(outputs) if decoded is None else decoded
        if blank:
            labels = np.zeros_like(labels)
        if rescaled:
            spatial = tuple(image.shape[1:])
            outputs = resample_to_shape(outputs, spatial, kind="probabilities")
            labels = self.task.regrid_labels(labels, outputs)
        if labels.ndim == 3 and options.stitch_threshold > 0:
            labels = stitch_slices(labels, threshold=options.stitch_threshold)
        return labels, outputs

    def detect_objects(self, image: Any, channel_names: Sequence[str] | None = None,
                       options: PredictOptions | None = None, **settings: Any) -> DetectedObjects:
        """The objects a detection run (Mask R-CNN, LACSS) finds in a ``(C, Y, X)`` image.

        The image is normalised with statistics of the whole image and its channels placed
        into the model's marker slots, as for the other models; large images are cut into
        overlapping tiles of ``options.tile_size`` (see :mod:`fluoseg.tasks.detection`).
        Scale normalisation does not apply to detectors (``options.diameter`` is ignored);
        test-time augmentation is refused.

        Returns
        -------
        DetectedObjects
            ``labels`` ``(Y, X)``, per-label ``scores`` (for COCO AP) and the ``score_map``
            ``(1, Y, X)``, at the image's own pixel size.
        """
        options = _options(options, settings)
        member = self.members[0]
        if not isinstance(member.task, ObjectPredictor):
            raise FluosegError("this run's model predicts maps, not objects; use predict_labels", path=options.source)
        if len(image.shape) != 3:
            raise FluosegError(f"detection models are 2D, but the image has {len(image.shape) - 1} spatial axes",
                               path=options.source)
        if options.tta != (0,):
            raise FluosegError("test-time augmentation averages maps, which a detection model does not output; "
                               "leave --tta out", path=options.source)
        names = self.channel_names_for(image, channel_names, source=options.source)
        selection = self.select_markers(names, options.markers, source=options.source)
        spatial = tuple(image.shape[1:])
        image, resampled = self._to_model_resolution(image, options.pixel_size)
        raw = np.asarray(image, dtype=np.float32)
        prep = member.preprocess
        stats = compute_stats(raw, method=prep.normalization, percentiles=tuple(prep.percentiles))
        if not stats.is_finite:
            raise FluosegError("image contains NaN or infinite pixels; replace them (e.g. with 0) before "
                               "prediction", path=options.source)
        slots = selection.arrange(normalize(raw, stats, method=prep.normalization), source=options.source)
        found = member.task.predict_objects(member.model, slots, geometry=self.tile_geometry(member, options.tile_size),
                                            batch_size=options.batch_size, progress=options.progress)
        if resampled:
            found = DetectedObjects(labels=resample_to_shape(found.labels, spatial, kind="labels"), scores=found.scores,
                                    score_map=resample_to_shape(found.score_map, spatial, kind="probabilities"))
        return found

    def model_scale_maps(self, image: Any, channel_names: Sequence[str] | None = None,
                         options: PredictOptions | None = None, **settings: Any) -> tuple[np.ndarray, bool]:
        """Activated maps at the scale the network works at, and whether the image was rescaled.

        This is what :meth:`predict_labels` decodes (the labels are then carried back to the image's grid);
        decoding parameters are tuned on these maps (:mod:`fluoseg.tuning`). With
        ``diameter="auto"``, when the estimate asks for a zoom within :data:`AUTO_REUSE` of 1
        the maps of the first probe are used as they are, which saves the second pass.
        """
        maps, _, rescaled = self._model_scale_pass(image, channel_names, _options(options, settings))
        return maps, rescaled

    def _model_scale_pass(self, image: Any, channel_names: Sequence[str] | None,
                          options: PredictOptions) -> tuple[np.ndarray, np.ndarray | None, bool]:
        """:meth:`model_scale_maps`, plus the labels of the maps where the diameter probe already
        decoded them (the reused first probe: decoding is the costlier half of a pass), else None."""
        first: tuple[np.ndarray, np.ndarray] | None = None
        if options.diameter == "auto" and self.task.target_diameter:
            diameter, first = self._estimate(image, channel_names, options, AUTO_REFINEMENTS)
            options = options.replace(diameter=diameter)
        options = self.resolve_diameter(image, channel_names, options)
        if options.diameter == "off":
            return np.asarray(self.predict_probabilities(image, channel_names, options)), None, False
        factor = scale_factor(float(options.diameter), float(self.task.target_diameter))
        if first is not None and abs(np.log(factor)) <= np.log(AUTO_REUSE):
            return first[0], first[1], False
        if abs(factor - 1.0) < 1e-6:
            return np.asarray(self.predict_probabilities(image, channel_names, options)), None, False
        return np.asarray(self.predict_probabilities(_zoomed(image, factor), channel_names, options)), None, True

    def estimate_diameter(self, image: Any, channel_names: Sequence[str] | None = None,
                          options: PredictOptions | None = None, *, refinements: int = AUTO_REFINEMENTS) -> float:
        """The mean object diameter of an image in pixels, from the model's own predictions.

        A first pass at the original scale gives an estimate; a network sees objects best at
        its training size, so when that estimate asks for a zoom far from 1 (more than
        :data:`AUTO_TOLERANCE`) the image is probed again at that zoom and the estimate is
        taken from there, up to ``refinements`` times (Cellpose refines its size model's
        guess in the same spirit). The estimate is divided by the task's ``diameter_bias``
        (the model's own overestimate, calibrated by ``fluoseg tune``). Only zooms below 1
        are probed (they are cheap); without any object the model's training diameter is
        returned (no rescaling).

        Objects several times the training size can be cut by the first pass into pieces of
        about the training size, which ask for no zoom. A network that also regresses a
        distance map says so: its peaks inside the pieces are small for their size
        (:meth:`~fluoseg.tasks.base.Task.object_fit` below :data:`FRAGMENT_FIT`).
        Then a probe at :data:`FRAGMENT_ZOOM` decides: when it sees objects at least
        :data:`FRAGMENT_GROWTH` times as large that fit better, the estimate goes on from it;
        small objects fused at that zoom fit worse and leave the first estimate standing.
        """
        return self._estimate(image, channel_names, options, refinements)[0]

    def _estimate(self, image: Any, channel_names: Sequence[str] | None, options: PredictOptions | None,
                  refinements: int) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
        """:meth:`estimate_diameter`, and the maps and labels of its first probe (at the original scale)."""
        options = _options(options, {}).replace(diameter="off")
        target = float(self.task.target_diameter or 0.0)
        if not target:
            raise FluosegError("this model was trained without scale normalisation; it has no diameter to estimate")
        diameter, zoom, first = target, 1.0, None
        for _ in range(1 + refinements):
            maps, labels = self._probe(image, channel_names, options, zoom)
            if first is None:
                first = (maps, labels)
                zoom, labels = self._unless_pieces(image, channel_names, options, maps, labels)
            if labels.max() == 0:
                break
            diameter = estimate_diameter_from_labels(labels) / zoom / getattr(self.task, "diameter_bias", 1.0)
            wanted = scale_factor(diameter, target)
            # Zooming in costs zoom^2 times the pixels and small objects are seen at the
            # original scale anyway; only probes at a smaller zoom are worth running.
            if abs(np.log(wanted / zoom)) <= np.log(AUTO_TOLERANCE) or wanted >= 1.0:
                break
            zoom = wanted
        assert first is not None  # the loop runs at least once
        return float(diameter), first

    def _unless_pieces(self, image: Any, channel_names: Sequence[str] | None, options: PredictOptions,
                       maps: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
        """The zoom and labels to estimate from: the first probe's, or the :data:`FRAGMENT_ZOOM`
        probe's when the first cut large objects into pieces (see :meth:`estimate_diameter`)."""
        fit = self.task.object_fit(maps, labels) if labels.max() > 0 else None
        if fit is None or not fit < FRAGMENT_FIT:
            return 1.0, labels
        coarse_maps, coarse = self._probe(image, channel_names, options, FRAGMENT_ZOOM)
        if coarse.max() == 0:
            return 1.0, labels
        grown = estimate_diameter_from_labels(coarse) / FRAGMENT_ZOOM / estimate_diameter_from_labels(labels)
        coarse_fit = self.task.object_fit(coarse_maps, coarse)
        if grown >= FRAGMENT_GROWTH and coarse_fit is not None and coarse_fit > fit:
            return FRAGMENT_ZOOM, coarse
        return 1.0, labels

    def _probe(self, image: Any, channel_names: Sequence[str] | None, options: PredictOptions,
               zoom: float) -> tuple[np.ndarray, np.ndarray]:
        """Maps and labels of the image zoomed by ``zoom`` (a probe pass of :meth:`estimate_diameter`)."""
        probe = image if zoom == 1.0 else _zoomed(image, zoom)
        maps = np.asarray(self.predict_probabilities(probe, channel_names, options))
        return maps, self.decode(maps)

    def resolve_diameter(self, image: Any, channel_names: Sequence[str] | None = None,
                         options: PredictOptions | None = None, **settings: Any) -> PredictOptions:
        """The options with the object diameter settled: a number of pixels, or ``"off"``.

        ``"off"`` when the model has no scale normalisation; ``"auto"`` is estimated by
        :meth:`estimate_diameter`. Callers that predict one image several times
        (e.g. :mod:`fluoseg.uncertainty`) settle it once, so every pass sees the same scale.
        """
        options = _options(options, settings)
        target = self.task.target_diameter
        if options.diameter == "off" or not target:
            return options.replace(diameter="off")
        if options.diameter != "auto":
            return options
        return options.replace(diameter=self.estimate_diameter(image, channel_names, options))

    def resamples(self, pixel_size: Sequence[float] | None) -> bool:
        """Whether images of this pixel size are resampled to the model's (a whole-image step)."""
        return self._resolution_factors(pixel_size) is not None

    def _resolution_factors(self, pixel_size: Sequence[float] | None) -> tuple[float, float] | None:
        """Y and X zoom factors to the model's working pixel size; None when it is already there."""
        target = self.members[0].preprocess.pixel_size_um
        if target is None or pixel_size is None:
            return None
        size = tuple(pixel_size)[-2:] if len(pixel_size) >= 2 else tuple(pixel_size) * 2  # isotropic shorthand
        factors = scale_factors(size, target)
        return None if all(abs(f - 1.0) < 1e-6 for f in factors) else (float(factors[0]), float(factors[1]))

    def _to_model_resolution(self, image: Any, pixel_size: Sequence[float] | None) -> tuple[Any, bool]:
        """The image at the model's working pixel size (unchanged when it is already there)."""
        factors = self._resolution_factors(pixel_size)
        if factors is None:
            return image, False
        zooms = (1.0,) * (len(image.shape) - 3) + factors  # z of a stack is never resampled
        return resample_image(np.asarray(image, dtype=np.float32), zooms), True


def _zoomed(image: Any, factor: float) -> np.ndarray:
    """The image resampled by ``factor`` along Y and X (the z of a stack is never resampled)."""
    factors = (1.0,) * (len(image.shape) - 3) + (factor, factor)
    return resample_image(np.asarray(image, dtype=np.float32), factors)


def _into(result: Any, out: Any) -> Any:
    if out is None or result is out:
        return result
    out[...] = result
    return out

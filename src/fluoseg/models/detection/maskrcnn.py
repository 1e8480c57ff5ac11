"""Mask R-CNN (He et al. 2017) in plain torch, with torchvision's defaults.

Kromp et al. compare Mask R-CNN with U-Nets for nuclear instance segmentation; this is
torchvision's ``maskrcnn_resnet50_fpn`` rebuilt from :mod:`fluoseg.models.encoders` and
the parts of this package, with three deliberate differences:

- any number of input channels and no normalisation inside: fluoseg standardises each
  sample itself, and the model sees the marker slots, not an RGB image;
- no resizing inside: torchvision scales every image to 800 px on its short side, which
  is why its anchors (32-512 px) suit photographs; fluoseg rescales images to a pixel size
  or nucleus size beforehand, so the default anchors here are 8-128 px (one size per
  level P2-P6, three aspect ratios), which fit nuclei of about 8-60 px;
- batch normalisation in the encoder is trained (torchvision freezes it, having
  ImageNet statistics); ``encoder_weights`` can still load ImageNet weights.

The image batch is zero-padded at the bottom and right to a multiple of 32; detections
are clipped to the unpadded size.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from fluoseg.errors import FluosegError
from fluoseg.models.decoders import positive_int
from fluoseg.models.detection.anchors import AnchorGenerator
from fluoseg.models.detection.common import DetectorGeometry, check_targets, prepare_images
from fluoseg.models.detection.fpn import ResNetFPN
from fluoseg.models.detection.options import fraction, numbers
from fluoseg.models.detection.paste import paste_masks_in_image
from fluoseg.models.detection.registry import register_detector
from fluoseg.models.detection.roi_heads import RoIHeads
from fluoseg.models.detection.rpn import RegionProposalNetwork, RPNHead
from fluoseg.models.pretrained import load_encoder_weights

NAME = "maskrcnn"


@register_detector(NAME)
class MaskRCNN(DetectorGeometry, nn.Module):
    """Mask R-CNN: ResNet-FPN backbone, region proposal network, box and mask heads.

    Parameters
    ----------
    in_channels
        Image channels (marker slots).
    n_classes
        Object classes, background excluded (1 for nuclei); target ``labels`` are 1..n.
    encoder
        Backbone encoder (``"resnet50"`` as torchvision; ``"resnet18"`` on a CPU budget).
    encoder_weights
        Pretrained encoder weights (see :func:`fluoseg.models.pretrained.load_encoder_weights`),
        or ``None`` for random initialisation.
    fpn_channels
        Channels of the pyramid maps (256).
    anchor_sizes
        One anchor size per pyramid level P2-P6, pixels.
    aspect_ratios
        Anchor height/width ratios, the same at every level (0.5, 1, 2).
    rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test, rpn_post_nms_top_n_train, rpn_post_nms_top_n_test
        Proposals kept per level before NMS and per image after it (2000/2000, 1000/1000).
    rpn_nms_thresh, rpn_fg_iou_thresh, rpn_bg_iou_thresh, rpn_batch_size_per_image, rpn_positive_fraction
        RPN NMS and anchor sampling (0.7; 0.7, 0.3; 256 at 0.5).
    box_fg_iou_thresh, box_bg_iou_thresh, box_batch_size_per_image, box_positive_fraction
        Proposal sampling for the box head (0.5, 0.5; 512 at 0.25).
    bbox_reg_weights
        Box head's box coder weights (10, 10, 5, 5).
    representation_size
        Units of the box head's two fully connected layers (1024).
    mask_channels
        Channels of the mask head's four convolutions (256).
    box_score_thresh, box_nms_thresh
        Inference: lowest class score kept (0.05), per-class NMS IoU (0.5).
    detections_per_image
        Most detections per image (100, torchvision's; raise it, e.g. to 500, for crowded
        nuclei images, or objects beyond the 100 best are lost).
    """

    supervisions = ("full",)
    """What it trains from: instance masks."""

    def __init__(
        self,
        in_channels: int,
        *,
        n_classes: int = 1,
        encoder: str = "resnet50",
        encoder_weights: str | None = None,
        fpn_channels: int = 256,
        anchor_sizes: Sequence[float] = (8.0, 16.0, 32.0, 64.0, 128.0),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 1000,
        rpn_nms_thresh: float = 0.7,
        rpn_fg_iou_thresh: float = 0.7,
        rpn_bg_iou_thresh: float = 0.3,
        rpn_batch_size_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        box_fg_iou_thresh: float = 0.5,
        box_bg_iou_thresh: float = 0.5,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        representation_size: int = 1024,
        mask_channels: int = 256,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        detections_per_image: int = 100,
    ) -> None:
        super().__init__()
        self.in_channels = positive_int(NAME, "in_channels", in_channels)
        self.n_classes = positive_int(NAME, "n_classes", n_classes)
        sizes = numbers(NAME, "anchor_sizes", anchor_sizes, length=5, positive=True)
        ratios = numbers(NAME, "aspect_ratios", aspect_ratios, positive=True)
        weights = numbers(NAME, "bbox_reg_weights", bbox_reg_weights, length=4, positive=True)
        for stage, foreground, background in (("rpn", rpn_fg_iou_thresh, rpn_bg_iou_thresh),
                                              ("box", box_fg_iou_thresh, box_bg_iou_thresh)):
            if fraction(NAME, f"{stage}_bg_iou_thresh", background) > fraction(NAME, f"{stage}_fg_iou_thresh",
                                                                               foreground):
                raise FluosegError(f"{NAME} option '{stage}_bg_iou_thresh' must not exceed '{stage}_fg_iou_thresh'")
        self.backbone = ResNetFPN(in_channels, encoder=encoder, out_channels=positive_int(NAME, "fpn_channels",
                                                                                          fpn_channels))
        if encoder_weights is not None:
            load_encoder_weights(self.backbone.body, encoder_weights)
        anchors = AnchorGenerator([(s,) for s in sizes], [ratios] * len(sizes))
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(fpn_channels, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=rpn_fg_iou_thresh, bg_iou_thresh=rpn_bg_iou_thresh,
            batch_size_per_image=positive_int(NAME, "rpn_batch_size_per_image", rpn_batch_size_per_image),
            positive_fraction=fraction(NAME, "rpn_positive_fraction", rpn_positive_fraction),
            pre_nms_top_n={"training": positive_int(NAME, "rpn_pre_nms_top_n_train", rpn_pre_nms_top_n_train),
                           "testing": positive_int(NAME, "rpn_pre_nms_top_n_test", rpn_pre_nms_top_n_test)},
            post_nms_top_n={"training": positive_int(NAME, "rpn_post_nms_top_n_train", rpn_post_nms_top_n_train),
                            "testing": positive_int(NAME, "rpn_post_nms_top_n_test", rpn_post_nms_top_n_test)},
            nms_thresh=fraction(NAME, "rpn_nms_thresh", rpn_nms_thresh),
        )
        self.roi_heads = RoIHeads(
            self.backbone.strides[:4], fpn_channels, self.n_classes + 1,
            representation_size=positive_int(NAME, "representation_size", representation_size),
            mask_layers=(positive_int(NAME, "mask_channels", mask_channels),) * 4,
            fg_iou_thresh=box_fg_iou_thresh, bg_iou_thresh=box_bg_iou_thresh,
            batch_size_per_image=positive_int(NAME, "box_batch_size_per_image", box_batch_size_per_image),
            positive_fraction=fraction(NAME, "box_positive_fraction", box_positive_fraction),
            bbox_reg_weights=weights, score_thresh=fraction(NAME, "box_score_thresh", box_score_thresh),
            nms_thresh=fraction(NAME, "box_nms_thresh", box_nms_thresh),
            detections_per_image=positive_int(NAME, "detections_per_image", detections_per_image),
        )

    def forward(self, images: Tensor, targets: Sequence[dict[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses (training) or detections (eval) for a batch of images.

        Parameters
        ----------
        images
            ``(N, C, H, W)``, any H and W.
        targets
            Training only: per image ``boxes`` ``(n, 4)`` float ``x1, y1, x2, y2``,
            ``labels`` ``(n,)`` int64 in 1..n_classes, ``masks`` ``(n, H, W)`` uint8.

        Returns
        -------
        dict or list of dict
            Training: ``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``,
            ``loss_box_reg``, ``loss_mask`` (their sum is the training loss).
            Eval: per image ``boxes`` ``(n, 4)``, ``scores`` ``(n,)``, ``labels``
            ``(n,)`` classes, ``masks`` ``(n, H, W)`` probabilities pasted into the image.
        """
        padded, image_size = prepare_images(images, self.in_channels, self.backbone.size_divisible)
        if self.training:
            check_targets(targets, images.shape[0], ("boxes", "labels", "masks"))
        features = self.backbone(padded)
        proposals, rpn_losses = self.rpn(padded.shape[-2:], image_size, features, targets)
        detections, head_losses = self.roi_heads(features[:4], proposals, image_size, targets)
        if self.training:
            return {**rpn_losses, **head_losses}
        for detection in detections:
            detection["masks"] = paste_masks_in_image(detection["masks"], detection["boxes"], image_size)
        return detections

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, n_classes={self.n_classes}"

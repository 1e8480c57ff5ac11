"""Segmentation networks, built by name.

Importing the package registers every built-in architecture, marker input layer and
attention module, so ``build_model("unet", in_channels=5, out_channels=2)`` works
right away. See ``docs/architecture.md`` for the interface every model follows.
"""

from fluoseg.models.attention import (
    MarkerExcite,
    SqueezeExcitation,
    availability_vectors,
    me_layer_outputs,
    mean_pairwise_cosine_distance,
    widened_base_filters,
)
from fluoseg.models.channel_invariant import (
    ChannelInvariantFrontEnd,
    build_front_end,
    front_end_names,
    marker_rows,
    register_front_end,
)
from fluoseg.models.deepcell import DeepCell
from fluoseg.models.deeplab import DeepLabV3
from fluoseg.models.decoders import EncoderNetwork, EncoderUNet
from fluoseg.models.encoders import Encoder, build_encoder, encoder_names
from fluoseg.models.fcn import FCN
from fluoseg.models.hemis import HeMIS, HeMISMS
from fluoseg.models.marker_input import (
    MarkerInput,
    MarkerSampling,
    MarkerSamplingDropout,
    MarkerSamplingVariableRatio,
    MarkerZero,
    build_marker_input,
    marker_input_names,
    register_marker_input,
)
from fluoseg.models.mc_dropout import mc_dropout
from fluoseg.models.pretrained import LoadReport, load_encoder_weights, without_encoder_weights
from fluoseg.models.registry import (
    attention_names,
    build_attention,
    build_model,
    count_parameters,
    model_names,
    model_spec,
    register_attention,
    register_model,
)
from fluoseg.models.trainable import TRAINABLE_SCOPES, eval_frozen_normalization, freeze_except, trainable_parameters
from fluoseg.models.unet import UNet
from fluoseg.models.unetpp import UNetPlusPlus

__all__ = [
    "ChannelInvariantFrontEnd",
    "DeepCell",
    "DeepLabV3",
    "Encoder",
    "EncoderNetwork",
    "EncoderUNet",
    "FCN",
    "HeMIS",
    "HeMISMS",
    "LoadReport",
    "MarkerExcite",
    "MarkerInput",
    "MarkerSampling",
    "MarkerSamplingDropout",
    "MarkerSamplingVariableRatio",
    "MarkerZero",
    "SqueezeExcitation",
    "TRAINABLE_SCOPES",
    "UNet",
    "UNetPlusPlus",
    "attention_names",
    "availability_vectors",
    "build_attention",
    "build_encoder",
    "build_front_end",
    "build_marker_input",
    "build_model",
    "count_parameters",
    "encoder_names",
    "eval_frozen_normalization",
    "freeze_except",
    "front_end_names",
    "load_encoder_weights",
    "marker_input_names",
    "marker_rows",
    "mc_dropout",
    "me_layer_outputs",
    "mean_pairwise_cosine_distance",
    "model_names",
    "model_spec",
    "register_attention",
    "register_front_end",
    "register_marker_input",
    "register_model",
    "trainable_parameters",
    "widened_base_filters",
    "without_encoder_weights",
]

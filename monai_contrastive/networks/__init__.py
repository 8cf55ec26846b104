from .blocks import InputNormalization
from .dcc import (
    ClassifierHead,
    SMPEncoder,
    coarse_logits,
    dcc_encoder_weights_prefix,
    dcc_pretraining_net,
    dcc_segmentation_net,
    load_coarse_network,
)
from .heads import DenseProjectionHead, ProjectionHead, StandardizedRegressionHead
from .moco import MomentumContrastNet
from .nets import ContrastiveNet, FoldEnsemble, RegressionContrastiveNet, remove_classifier
from .small import FramePoolVideoNet
from .unet import FeatureUNet, GlobalLocalUNet
from .weights import PRETRAINED_INITS, load_pretrained_weights, pretrained_branch_weights

__all__ = [
    "ClassifierHead",
    "SMPEncoder",
    "coarse_logits",
    "dcc_encoder_weights_prefix",
    "dcc_pretraining_net",
    "dcc_segmentation_net",
    "load_coarse_network",
    "ContrastiveNet",
    "DenseProjectionHead",
    "FeatureUNet",
    "FoldEnsemble",
    "FramePoolVideoNet",
    "GlobalLocalUNet",
    "InputNormalization",
    "MomentumContrastNet",
    "ProjectionHead",
    "RegressionContrastiveNet",
    "StandardizedRegressionHead",
    "load_pretrained_weights",
    "pretrained_branch_weights",
    "PRETRAINED_INITS",
    "remove_classifier",
]

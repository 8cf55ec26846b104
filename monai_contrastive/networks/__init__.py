from .blocks import InputNormalization
from .bundle_weights import load_bundle_weights, weights_mismatch
from .clef import CLEFNet, CLEFSegNet, PointwiseHead, affine_warp, clef_backbone_weights
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
from .initialization import reinitialized_copy
from .moco import MomentumContrastNet
from .nets import ContrastiveNet, FoldEnsemble, RegressionContrastiveNet, remove_classifier
from .small import FramePoolVideoNet
from .unet import FeatureUNet, GlobalLocalUNet
from .weights import PRETRAINED_INITS, BranchWeights, load_pretrained_weights, pretrained_branch_weights

__all__ = [
    "BranchWeights",
    "ClassifierHead",
    "SMPEncoder",
    "coarse_logits",
    "dcc_encoder_weights_prefix",
    "dcc_pretraining_net",
    "dcc_segmentation_net",
    "load_coarse_network",
    "CLEFNet",
    "CLEFSegNet",
    "PointwiseHead",
    "affine_warp",
    "clef_backbone_weights",
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
    "load_bundle_weights",
    "load_pretrained_weights",
    "pretrained_branch_weights",
    "reinitialized_copy",
    "PRETRAINED_INITS",
    "remove_classifier",
    "weights_mismatch",
]

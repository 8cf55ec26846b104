from .blocks import InputNormalization
from .clef import CLEFNet, CLEFSegNet, PointwiseHead, affine_warp, clef_backbone_weights
from .heads import DenseProjectionHead, ProjectionHead, StandardizedRegressionHead
from .moco import MomentumContrastNet
from .nets import ContrastiveNet, FoldEnsemble, RegressionContrastiveNet, remove_classifier
from .small import FramePoolVideoNet
from .unet import FeatureUNet, GlobalLocalUNet
from .weights import PRETRAINED_INITS, load_pretrained_weights, pretrained_branch_weights

__all__ = [
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
    "load_pretrained_weights",
    "pretrained_branch_weights",
    "PRETRAINED_INITS",
    "remove_classifier",
]

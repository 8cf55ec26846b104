from .blocks import InputNormalization
from .heads import DenseProjectionHead, ProjectionHead, StandardizedRegressionHead
from .moco import MomentumContrastNet
from .nets import ContrastiveNet, FoldEnsemble, RegressionContrastiveNet, remove_classifier
from .unet import FeatureUNet, GlobalLocalUNet
from .weights import load_pretrained_weights

__all__ = [
    "ContrastiveNet",
    "DenseProjectionHead",
    "FeatureUNet",
    "FoldEnsemble",
    "GlobalLocalUNet",
    "InputNormalization",
    "MomentumContrastNet",
    "ProjectionHead",
    "RegressionContrastiveNet",
    "StandardizedRegressionHead",
    "load_pretrained_weights",
    "remove_classifier",
]

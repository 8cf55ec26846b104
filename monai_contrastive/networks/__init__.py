from .blocks import InputNormalization
from .heads import DenseProjectionHead, ProjectionHead, StandardizedRegressionHead
from .moco import MomentumContrastNet
from .nets import ContrastiveNet, FoldEnsemble, RegressionContrastiveNet, remove_classifier
from .weights import load_pretrained_weights

__all__ = [
    "ContrastiveNet",
    "DenseProjectionHead",
    "FoldEnsemble",
    "InputNormalization",
    "MomentumContrastNet",
    "ProjectionHead",
    "RegressionContrastiveNet",
    "StandardizedRegressionHead",
    "load_pretrained_weights",
    "remove_classifier",
]

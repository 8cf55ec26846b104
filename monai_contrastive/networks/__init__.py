from .blocks import InputNormalization
from .heads import FoldEnsemble, ProjectionHead, RegressionContrastiveNet, load_backbone_weights

__all__ = ["FoldEnsemble", "InputNormalization", "ProjectionHead", "RegressionContrastiveNet", "load_backbone_weights"]

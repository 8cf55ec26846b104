from .heads import FoldEnsemble, ProjectionHead, RegressionContrastiveNet, load_backbone_weights

__all__ = ["FoldEnsemble", "ProjectionHead", "RegressionContrastiveNet", "load_backbone_weights"]

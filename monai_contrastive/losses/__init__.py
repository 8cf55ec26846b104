from .adacon import AdaptiveMarginContrastiveLoss, AdaptiveTripletLoss, NPairLoss, SupConLoss, positive_mask
from .ecdf import ECDF
from .multitask import MultiTaskRegressionLoss, regression_loss

__all__ = [
    "AdaptiveMarginContrastiveLoss",
    "AdaptiveTripletLoss",
    "ECDF",
    "MultiTaskRegressionLoss",
    "NPairLoss",
    "SupConLoss",
    "positive_mask",
    "regression_loss",
]

from .adacon import AdaptiveMarginContrastiveLoss, AdaptiveTripletLoss, NPairLoss, SupConLoss, positive_mask
from .clef import DecodingLoss, DiscriminativenessLoss, EquivarianceLoss, OrganDiceCELoss, organ_one_hot
from .dcc import (
    PRETRAIN_METHODS,
    DynamicContrastCorrelationLoss,
    attention_mean_intensity,
    contrast_correlation_weights,
    dcc_pretraining_loss,
)
from .ecdf import ECDF
from .infonce import InfoNCELoss
from .lrc import LocalRegionContrastLoss, region_means
from .multitask import FlatRegressionLoss, MultiTaskRegressionLoss, regression_loss
from .multiterm import LossTerm, MultiTermLoss

__all__ = [
    "AdaptiveMarginContrastiveLoss",
    "AdaptiveTripletLoss",
    "DynamicContrastCorrelationLoss",
    "PRETRAIN_METHODS",
    "attention_mean_intensity",
    "contrast_correlation_weights",
    "dcc_pretraining_loss",
    "DecodingLoss",
    "DiscriminativenessLoss",
    "EquivarianceLoss",
    "OrganDiceCELoss",
    "organ_one_hot",
    "ECDF",
    "FlatRegressionLoss",
    "InfoNCELoss",
    "LocalRegionContrastLoss",
    "LossTerm",
    "MultiTaskRegressionLoss",
    "MultiTermLoss",
    "NPairLoss",
    "SupConLoss",
    "positive_mask",
    "region_means",
    "regression_loss",
]

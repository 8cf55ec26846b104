from monai_contrastive.io import apply_umask, atomic_save, atomic_write_json

from .checkpoint import BestModelSaver, FinalModelSaver, ResumableCheckpoint, load_model_weights
from .metrics import RegressionMetric, RegressionMetricHandler, regression_metrics
from .moco import MomentumUpdate, QueueUpdate
from .precise_bn import PreciseBatchNorm, update_bn_stats

__all__ = [
    "FinalModelSaver",
    "BestModelSaver",
    "MomentumUpdate",
    "QueueUpdate",
    "PreciseBatchNorm",
    "RegressionMetric",
    "RegressionMetricHandler",
    "ResumableCheckpoint",
    "apply_umask",
    "atomic_save",
    "atomic_write_json",
    "load_model_weights",
    "regression_metrics",
    "update_bn_stats",
]

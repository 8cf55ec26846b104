from .checkpoint import BestModelSaver, ResumableCheckpoint, atomic_save
from .metrics import RegressionMetric, RegressionMetricHandler, regression_metrics

__all__ = [
    "BestModelSaver",
    "RegressionMetric",
    "RegressionMetricHandler",
    "ResumableCheckpoint",
    "atomic_save",
    "regression_metrics",
]

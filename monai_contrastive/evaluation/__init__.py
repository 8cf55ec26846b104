"""Task-agnostic evaluation runs and reports: cross-validation over folds, a held-out test split under several
test-time protocols, end-of-run summaries and the metric tables they write (regression MAE / RMSE / R² today,
segmentation Dice / NSD next)."""

from __future__ import annotations

from .cross_validation import CrossValidationEvaluation
from .holdout import HoldoutEvaluation
from .reporting import report_predictions, report_validation
from .tables import write_fold_report, write_metrics_table

__all__ = [
    "CrossValidationEvaluation",
    "HoldoutEvaluation",
    "report_predictions",
    "report_validation",
    "write_fold_report",
    "write_metrics_table",
]

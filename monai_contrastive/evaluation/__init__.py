"""Task-agnostic evaluation runs and reports: cross-validation over folds, a held-out test split under several
test-time protocols, end-of-run summaries and the metric tables they write (regression MAE / RMSE / R²), and the
per-organ Dice / NSD evaluation of segmentation networks on the original label grid."""

from __future__ import annotations

from .clustering import RegionClusteringEvaluation, cluster_slice, region_clustering_scores
from .cross_validation import CrossValidationEvaluation
from .dice_nsd import FLARE22_NSD_TOLERANCE_MM, segmentation_metrics
from .flare import FLARE22_ABBREVIATIONS, flare_tables
from .holdout import HoldoutEvaluation
from .multiphase import organ_embedding_pca, paired_wilcoxon, print_dice_per_phase
from .reporting import report_heldout_test, report_predictions, report_validation
from .segmentation import SegmentationEvaluation
from .segmentation_report import OrganRow
from .tables import write_fold_report, write_metrics_table

__all__ = [
    "organ_embedding_pca",
    "paired_wilcoxon",
    "print_dice_per_phase",
    "RegionClusteringEvaluation",
    "cluster_slice",
    "region_clustering_scores",
    "CrossValidationEvaluation",
    "FLARE22_ABBREVIATIONS",
    "flare_tables",
    "FLARE22_NSD_TOLERANCE_MM",
    "HoldoutEvaluation",
    "OrganRow",
    "report_heldout_test",
    "report_predictions",
    "report_validation",
    "SegmentationEvaluation",
    "segmentation_metrics",
    "write_fold_report",
    "write_metrics_table",
]

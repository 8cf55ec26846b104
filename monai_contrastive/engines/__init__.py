from .cross_validation import CrossValidationEvaluation, write_metrics_table
from .holdout import HoldoutEvaluation
from .inferers import SelectOutputInferer
from .reporting import report_predictions, report_validation
from .trainer import MultiViewTrainer, flatten_views, loss_terms_output

__all__ = [
    "CrossValidationEvaluation",
    "HoldoutEvaluation",
    "MultiViewTrainer",
    "SelectOutputInferer",
    "flatten_views",
    "loss_terms_output",
    "report_predictions",
    "report_validation",
    "write_metrics_table",
]

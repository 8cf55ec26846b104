from .prepare_batch import PrepareViewBatch
from .trainer import MultiViewTrainer, loss_terms_output

__all__ = ["MultiViewTrainer", "PrepareViewBatch", "loss_terms_output"]

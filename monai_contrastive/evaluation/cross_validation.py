"""K-fold cross-validation evaluation of a regression bundle (AdaCon §IV-A: four folds, averaged)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from monai.inferers import Inferer

from monai_contrastive.evaluation.tables import write_fold_report
from monai_contrastive.handlers.checkpoint import load_model_weights
from monai_contrastive.handlers.metrics import RegressionMetricHandler
from monai_contrastive.inferers import SelectOutputInferer

__all__ = ["CrossValidationEvaluation"]

logger = logging.getLogger(__name__)


class CrossValidationEvaluation:
    """Evaluate each fold's best model on that fold's held-out items; report per fold and mean ± std over folds.

    Folds are recomputed with :func:`monai_contrastive.data.select_fold` (patient-grouped, same seed as training),
    so each model is scored only on patients it never saw. Writes ``cv_metrics.json``, ``cv_metrics.md`` and
    ``cv_predictions.csv`` to ``output_dir`` and returns the metrics dict.

    Args:
        network: the network (its weights are replaced by each fold's checkpoint).
        items: all labelled items (the datalist's training list).
        preprocessing: deterministic eval transform.
        ckpt_pattern: checkpoint path with ``{fold}``, e.g. ``models/fold{fold}/model.pt``.
        folds: folds to evaluate.
        num_folds / group_key / seed: the fold definition used for training.
        device, batch_size, num_workers: evaluation loader settings.
        inferer: defaults to :class:`SelectOutputInferer` (``pred``).
        key_in_ckpt: entry of the checkpoint holding the model state dict.
        label_key: label key of the items.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        items: Sequence[dict],
        preprocessing: Callable,
        ckpt_pattern: str,
        output_dir: str,
        folds: Sequence[int] = (0, 1, 2, 3),
        num_folds: int = 4,
        group_key: str = "patient",
        seed: int = 0,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        num_workers: int = 0,
        inferer: Inferer | None = None,
        key_in_ckpt: str | None = "model",
        label_key: str = "label",
    ) -> None:
        self.network = network
        self.items = list(items)
        self.preprocessing = preprocessing
        self.ckpt_pattern = ckpt_pattern
        self.output_dir = output_dir
        self.folds = [int(f) for f in folds]
        self.num_folds = num_folds
        self.group_key = group_key
        self.seed = seed
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.inferer = inferer or SelectOutputInferer("pred")
        self.key_in_ckpt = key_in_ckpt
        self.label_key = label_key

    def _load(self, fold: int) -> str:
        path = self.ckpt_pattern.format(fold=fold)
        load_model_weights(self.network, path, self.key_in_ckpt, self.device, what=f"fold {fold}: checkpoint")
        return path

    def run(self) -> dict:
        from monai_contrastive.data.datalist import select_fold

        os.makedirs(self.output_dir, exist_ok=True)
        per_fold: dict[str, dict[str, float]] = {}
        predictions: list[tuple[int, str, float, float]] = []
        for fold in self.folds:
            path = self._load(fold)
            val = select_fold(self.items, fold, "val", self.num_folds, self.group_key, self.seed)
            loader = DataLoader(
                Dataset(val, self.preprocessing), batch_size=self.batch_size, num_workers=self.num_workers
            )
            out = from_engine(["pred", self.label_key])
            evaluator = SupervisedEvaluator(
                device=self.device,
                val_data_loader=loader,
                network=self.network.to(self.device),
                inferer=self.inferer,
                key_val_metric={"mae": RegressionMetricHandler("mae", output_transform=out)},
                additional_metrics={
                    "rmse": RegressionMetricHandler("rmse", output_transform=out),
                    "r2": RegressionMetricHandler("r2", output_transform=out),
                },
                decollate=False,
            )
            rows: list[tuple[float, float]] = []

            def _collect(engine, rows=rows):
                p = engine.state.output["pred"].detach().reshape(-1).cpu().tolist()
                t = engine.state.output["label"].detach().reshape(-1).cpu().tolist()
                rows.extend(zip(p, t))

            from ignite.engine import Events

            evaluator.add_event_handler(Events.ITERATION_COMPLETED, _collect)
            evaluator.run()
            m = {k: float(v) for k, v in evaluator.state.metrics.items()}
            m["n"] = len(val)
            per_fold[f"fold {fold}"] = m
            for item, (p, t) in zip(val, rows):
                predictions.append((fold, str(item.get("image")), t, p))
            logger.info(f"fold {fold} ({path}): " + ", ".join(f"{k}={v:.4g}" for k, v in m.items()))
        result = write_fold_report(
            self.output_dir,
            per_fold,
            ["mae", "rmse", "r2"],
            "Cross-validation (held-out fold)",
            predictions=predictions,
            prediction_header=["fold", "image", "label", "pred"],
        )
        print(open(os.path.join(self.output_dir, "cv_metrics.md")).read())
        return result

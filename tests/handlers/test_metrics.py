"""Regression metrics pooled over a whole evaluation set (MAE, RMSE, R²) and their Ignite handler."""

from __future__ import annotations

import pytest
import torch

from monai_contrastive.handlers import RegressionMetric, regression_metrics


def test_regression_metric_pools_the_whole_set():
    p = torch.tensor([1.0, 2.0, 3.0, 5.0])
    t = torch.tensor([1.5, 2.0, 2.0, 4.0])
    m = {k: RegressionMetric(k) for k in ("mae", "rmse", "r2")}
    for metric in m.values():
        metric(p[:2, None], t[:2, None])  # two batches
        metric(p[2:, None], t[2:, None])
    err = p - t
    assert m["mae"].aggregate().item() == pytest.approx(err.abs().mean().item())
    assert m["rmse"].aggregate().item() == pytest.approx(err.pow(2).mean().sqrt().item())
    r2 = 1 - err.pow(2).sum() / (t - t.mean()).pow(2).sum()
    assert m["r2"].aggregate().item() == pytest.approx(r2.item(), rel=1e-5)
    assert regression_metrics(p, t)["r2"] == pytest.approx(r2.item(), rel=1e-6)
    with pytest.raises(ValueError, match="no samples"):
        RegressionMetric("mae").aggregate()


def test_regression_metric_handler_scores_an_evaluation_run():
    """The handler as the configs use it (``val_mae`` etc. from ``from_engine(['pred', 'label'])``), over batches of
    unequal size, against the formulas computed here with numpy."""
    import numpy as np
    from ignite.engine import Engine
    from monai.handlers import from_engine

    from monai_contrastive.handlers import RegressionMetricHandler

    preds = [np.array([[2.0], [4.0], [5.5]]), np.array([[1.0]])]
    labels = [np.array([[2.5], [3.0], [6.0]]), np.array([[2.0]])]
    evaluator = Engine(lambda e, b: {"pred": torch.as_tensor(preds[b]), "label": torch.as_tensor(labels[b])})
    for name in ("mae", "rmse", "r2", "mse"):
        RegressionMetricHandler(name, output_transform=from_engine(["pred", "label"])).attach(evaluator, f"val_{name}")
    evaluator.run([0, 1])
    p, t = np.concatenate(preds).ravel(), np.concatenate(labels).ravel()
    err = p - t
    expected = {
        "val_mae": np.abs(err).mean(),  # 0.75, pooled over the 4 samples, not the mean of two batch means
        "val_rmse": np.sqrt((err**2).mean()),
        "val_mse": (err**2).mean(),
        "val_r2": 1 - (err**2).sum() / ((t - t.mean()) ** 2).sum(),
    }
    for k, v in expected.items():
        assert evaluator.state.metrics[k] == pytest.approx(v, rel=1e-6), k
    assert evaluator.state.metrics["val_mae"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="metric_name"):
        RegressionMetricHandler("auc")

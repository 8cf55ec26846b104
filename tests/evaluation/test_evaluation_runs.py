"""CrossValidationEvaluation and HoldoutEvaluation on a tiny network (CPU)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from monai_contrastive.evaluation import CrossValidationEvaluation, HoldoutEvaluation
from monai_contrastive.inferers import SelectOutputInferer


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x):
        return {"pred": self.fc(x), "proj": x}


def _preprocess(item: dict) -> dict:
    g = torch.Generator().manual_seed(int(item["image"].split("_")[1]))
    return {"image": torch.rand(4, generator=g), "label": torch.tensor([float(item["label"])])}


@pytest.fixture
def setup(tmp_path):
    items = [{"image": f"img_{i}", "label": 0.1 * i, "patient": f"P{i // 2}", "quality": i % 2} for i in range(16)]
    for fold in range(4):
        torch.manual_seed(fold)
        os.makedirs(tmp_path / f"fold{fold}")
        torch.save({"model": _Net().state_dict()}, tmp_path / f"fold{fold}" / "model.pt")
    return items, tmp_path


def test_cross_validation(setup):
    items, root = setup
    out = root / "cv"
    result = CrossValidationEvaluation(
        _Net(), items, _preprocess, str(root / "fold{fold}" / "model.pt"), str(out), batch_size=3
    ).run()
    assert set(result["folds"]) == {f"fold {f}" for f in range(4)}
    assert sum(m["n"] for m in result["folds"].values()) == len(items)
    assert set(result["mean_over_folds"]) == {"mae", "rmse", "r2"}
    assert json.loads((out / "cv_metrics.json").read_text()) == result
    assert len((out / "cv_predictions.csv").read_text().splitlines()) == len(items) + 1
    assert "mean ± std" in (out / "cv_metrics.md").read_text()
    # the metric values, recomputed here: each fold's model on that fold's held-out patients, numpy formulas
    from monai_contrastive.data import select_fold

    maes = []
    for fold in range(4):
        net = _Net()
        net.load_state_dict(torch.load(root / f"fold{fold}" / "model.pt", weights_only=True)["model"])
        val = select_fold(items, fold, "val", 4, "patient", 0)
        with torch.no_grad():
            pred = np.array([float(net(_preprocess(x)["image"][None])["pred"]) for x in val])
        label = np.array([float(x["label"]) for x in val])
        err = pred - label
        expected = {
            "mae": np.abs(err).mean(),
            "rmse": np.sqrt((err**2).mean()),
            "r2": 1 - (err**2).sum() / ((label - label.mean()) ** 2).sum(),
        }
        got = result["folds"][f"fold {fold}"]
        for k, v in expected.items():
            assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (fold, k)
        maes.append(expected["mae"])
    assert result["mean_over_folds"]["mae"]["mean"] == pytest.approx(np.mean(maes), rel=1e-5)


def test_holdout(setup):
    items, root = setup
    protocols = {
        "single": {"preprocessing": _preprocess, "inferer": SelectOutputInferer()},
        "batched": {"preprocessing": _preprocess, "inferer": SelectOutputInferer(), "batch_size": 4},
    }
    out = root / "test"
    result = HoldoutEvaluation(_Net(), items, protocols, str(root / "fold0" / "model.pt"), str(out), unit="%").run()
    assert result["n"] == len(items) and set(result["protocols"]) == {"single", "batched"}
    assert set(result["protocols"]["single"]) == {"all", "quality=0", "quality=1"}
    assert result["protocols"]["single"]["all"]["mae"] == pytest.approx(result["protocols"]["batched"]["all"]["mae"])
    header = (out / "test_predictions.csv").read_text().splitlines()[0]
    assert header == "image,label,quality,pred (single),pred (batched)"
    assert (out / "test_metrics.md").read_text().startswith("# Held-out test split (MAE/RMSE in %)")
    with pytest.raises(ValueError, match="lacks"):
        HoldoutEvaluation(_Net(), items, {"x": {"inferer": SelectOutputInferer()}}, "ckpt", str(out))

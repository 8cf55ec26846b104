from __future__ import annotations

import csv
import json
import math

from monai_contrastive.evaluation import write_fold_report, write_metrics_table


def test_write_metrics_table(tmp_path):
    path = tmp_path / "t.md"
    write_metrics_table(str(path), {"a": {"mae": "1.000", "n": 3}, "b": {"mae": "n/a"}}, "Title", ["mae", "n"])
    assert path.read_text() == "# Title\n\n| | mae | n |\n|---|---|---|\n| a | 1.000 | 3 |\n| b | n/a |  |\n"


def test_fold_report_regression(tmp_path):
    per_fold = {
        "fold 0": {"mae": 1.0, "rmse": 2.0, "r2": 0.5, "n": 10},
        "fold 1": {"mae": 3.0, "rmse": 4.0, "r2": 0.25, "n": 11},
    }
    predictions = [(0, "a.png", 0.5, 0.75), (1, "b.png", 1.0, 0.5)]
    result = write_fold_report(
        str(tmp_path), per_fold, ["mae", "rmse", "r2"], "CV", predictions, ["fold", "image", "label", "pred"]
    )
    assert result["folds"] == per_fold
    assert result["mean_over_folds"]["mae"] == {"mean": 2.0, "std": math.sqrt(2.0)}
    assert json.loads((tmp_path / "cv_metrics.json").read_text()) == result
    assert (tmp_path / "cv_metrics.md").read_text() == (
        "# CV\n\n| | mae | rmse | r2 | n |\n|---|---|---|---|---|\n"
        "| fold 0 | 1.0000 | 2.0000 | 0.5000 | 10 |\n"
        "| fold 1 | 3.0000 | 4.0000 | 0.2500 | 11 |\n"
        "| mean ± std | 2.0000 ± 1.4142 | 3.0000 ± 1.4142 | 0.3750 ± 0.1768 |  |\n"
    )
    with open(tmp_path / "cv_predictions.csv", newline="") as f:
        assert list(csv.reader(f)) == [["fold", "image", "label", "pred"], ["0", "a.png", "0.5", "0.75"]] + [
            ["1", "b.png", "1.0", "0.5"]
        ]


def test_fold_report_other_metrics(tmp_path):
    """Any metric names (e.g. per-organ Dice), no count column, no predictions CSV, one fold (std 0)."""
    result = write_fold_report(
        str(tmp_path),
        {"run": {"dice_liver": 0.9, "nsd_liver": 0.8}},
        ["dice_liver", "nsd_liver"],
        "Seg",
        prefix="seg",
        digits=2,
        count_key=None,
    )
    assert result["mean_over_folds"]["dice_liver"] == {"mean": 0.9, "std": 0.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg_metrics.json", "seg_metrics.md"]
    assert "| mean ± std | 0.90 ± 0.00 | 0.80 ± 0.00 |\n" in (tmp_path / "seg_metrics.md").read_text()

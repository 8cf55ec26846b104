"""End-of-run reports: a re-run of a finished run keeps the earlier run's validation report."""

from __future__ import annotations

import json
from types import SimpleNamespace

from monai_contrastive.evaluation import report_validation


def _saver(tmp_path, best_metrics):
    return SimpleNamespace(save_path=str(tmp_path / "model.pt"), best_epoch=3, best_metrics=best_metrics)


def test_rerun_of_finished_run_keeps_val_metrics(tmp_path, capsys):
    evaluator = SimpleNamespace(state=SimpleNamespace(metrics={"val_mae": 0.1, "val_r2": 0.5}))
    first = report_validation(evaluator, _saver(tmp_path, {"val_mae": 0.1}))
    path = tmp_path / "val_metrics.json"
    assert json.loads(path.read_text()) == first and first["last_validation"] == {"val_mae": 0.1, "val_r2": 0.5}
    # the re-run resumed at the end: no validation ran, the evaluator has no metrics
    rerun = report_validation(SimpleNamespace(state=SimpleNamespace(metrics={})), _saver(tmp_path, {"val_mae": 0.1}))
    assert rerun == first and json.loads(path.read_text()) == first
    assert "No validation ran in this run" in capsys.readouterr().out

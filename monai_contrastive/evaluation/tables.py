"""
Metric tables of the evaluation runs, for any task's metric names: a markdown table, and the JSON + markdown + CSV
report of a cross-validation (per fold and mean ± std over folds).

The writers know no metric: regression passes ``("mae", "rmse", "r2")``, a segmentation report its per-organ
Dice / NSD names.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from monai_contrastive.io import atomic_write, atomic_write_json

__all__ = ["write_metrics_table", "write_fold_report", "write_json", "write_csv"]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of ``values``."""
    t = torch.tensor(list(values), dtype=torch.float64)
    return float(t.mean()), float(t.std()) if t.numel() > 1 else 0.0


def write_metrics_table(
    path: str,
    rows: Mapping[str, Mapping[str, Any]],
    title: str,
    metric_names: Sequence[str],
    append: bool = False,
) -> None:
    """
    Write a markdown table of ``{row_name: {metric: value}}`` with one column per metric name.

    Args:
        path: the ``.md`` file to write.
        rows: the rows, in order; a metric a row lacks is left empty.
        title: the table's heading.
        metric_names: the columns, in order.
        append: add the table after a blank line at the end of ``path`` instead of replacing the file.
    """
    lines = [f"# {title}", "", "| | " + " | ".join(metric_names) + " |", "|---" * (len(metric_names) + 1) + "|"]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(str(m.get(k, "")) for k in metric_names) + " |")
    with open(path, "a" if append else "w") as f:
        f.write(("\n" if append else "") + "\n".join(lines) + "\n")


def write_json(path: str, content: Any) -> None:
    """Write ``content`` as indented JSON (atomically: a reader never sees half a report)."""
    atomic_write_json(content, path)


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write a CSV file with a ``header`` row followed by ``rows`` (atomically)."""

    def write(f) -> None:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)

    atomic_write(path, write, suffix=".csv")


def write_fold_report(
    output_dir: str,
    per_fold: Mapping[str, Mapping[str, float]],
    metric_names: Sequence[str],
    title: str,
    predictions: Iterable[Sequence[Any]] | None = None,
    prediction_header: Sequence[str] | None = None,
    prefix: str = "cv",
    digits: int = 4,
    count_key: str | None = "n",
) -> dict:
    """
    Report the metrics of several folds (or runs): per fold and mean ± std over the folds.

    Writes to ``output_dir``:

    - ``<prefix>_metrics.json``: ``{"folds": per_fold, "mean_over_folds": {metric: {"mean": ..., "std": ...}}}``;
    - ``<prefix>_metrics.md``: one row per fold and a ``mean ± std`` row, the metrics with ``digits`` decimals and
      a ``count_key`` column (the number of items of each fold);
    - ``<prefix>_predictions.csv``: ``prediction_header`` and the ``predictions`` rows, when a header is given.

    Args:
        output_dir: folder of the reports (must exist).
        per_fold: ``{fold_name: {metric: value, count_key: n}}``, in table order.
        metric_names: metrics summarised over the folds, e.g. ``["mae", "rmse", "r2"]`` or per-organ Dice names.
        title: heading of the markdown table.
        predictions: per-item rows of the predictions CSV, e.g. ``(fold, image, label, pred)``.
        prediction_header: header of the predictions CSV; ``None`` writes no CSV.
        prefix: file name prefix.
        digits: decimals of the metrics in the markdown table.
        count_key: per-fold count shown as the last column; ``None`` for none.

    Returns:
        the content of the JSON file.
    """
    names = list(metric_names)
    summary = {}
    for k in names:
        mean, std = _mean_std([per_fold[f][k] for f in per_fold])
        summary[k] = {"mean": mean, "std": std}
    result = {"folds": dict(per_fold), "mean_over_folds": summary}
    write_json(os.path.join(output_dir, f"{prefix}_metrics.json"), result)
    counts = [count_key] if count_key else []
    table: dict[str, dict[str, Any]] = {
        name: {k: f"{m[k]:.{digits}f}" for k in names} | {c: m[c] for c in counts} for name, m in per_fold.items()
    }
    table["mean ± std"] = {k: f"{summary[k]['mean']:.{digits}f} ± {summary[k]['std']:.{digits}f}" for k in names}
    write_metrics_table(os.path.join(output_dir, f"{prefix}_metrics.md"), table, title, names + counts)
    if prediction_header is not None:
        write_csv(os.path.join(output_dir, f"{prefix}_predictions.csv"), prediction_header, predictions or ())
    return result

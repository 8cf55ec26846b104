"""The reports of a segmentation evaluation: per case and organ records, their summaries (overall, per organ, per
contrast phase, per case) and the CSV / JSON / markdown files."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from monai_contrastive.evaluation.dice_nsd import ORGAN_METRICS
from monai_contrastive.evaluation.tables import _mean_std, write_csv, write_json, write_metrics_table

__all__ = ["OrganRow", "summarise_segmentation", "write_segmentation_report", "nanmean"]

logger = logging.getLogger(__name__)


class OrganRow(NamedTuple):
    """The scores of one organ in one case (a row of ``seg_metrics.csv``; the field names are its header)."""

    case: str
    phase: str
    organ: str
    dice: float
    nsd: float
    absent: int
    false_positive: int
    gt_voxels: int
    pred_voxels: int


def _summary(values: Sequence[float]) -> dict:
    """Mean and sample std of the non-NaN ``values`` and their count; ``None`` (JSON null) when there are none."""
    valid = [float(v) for v in values if not math.isnan(v)]
    if not valid:
        return {"mean": None, "std": None, "n": 0}
    mean, std = _mean_std(valid)
    return {"mean": mean, "std": std, "n": len(valid)}


def nanmean(values: Sequence[float]) -> float:
    """The mean of the non-NaN ``values``; NaN when there are none."""
    valid = [v for v in values if not math.isnan(v)]
    return sum(valid) / len(valid) if valid else math.nan


def _fmt(s: Mapping, digits: int = 4) -> str:
    return "n/a" if s["mean"] is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _organ_summary(rows: Sequence[OrganRow], organs: Sequence[str]) -> dict:
    """Per organ: Dice and NSD summaries over the cases where it is in the ground truth or predicted (a predicted
    organ that the ground truth lacks scores 0), absent (not in the ground truth) and false-positive counts."""
    out = {}
    for organ in organs:
        r = [row for row in rows if row.organ == organ]
        out[organ] = {
            "dice": _summary([row.dice for row in r]),
            "nsd": _summary([row.nsd for row in r]),
            "n_absent": sum(row.absent for row in r),
            "n_false_positive": sum(row.false_positive for row in r),
        }
    return out


def summarise_segmentation(
    rows: Sequence[OrganRow],
    per_case: Mapping[str, Mapping],
    organs: Sequence[str],
    tolerances: Sequence[float],
    num_classes: int,
    checkpoint: str | None,
    use_subvoxels: bool,
    has_phase: bool,
) -> dict:
    """The content of ``seg_metrics.json``: overall, per organ, per phase and per case summaries of ``rows``.

    Args:
        rows: one record per case and organ.
        per_case: case name -> ``{"phase", "dice", "nsd", "n_absent", "n_false_positive"}`` (means over the case's
            organs in the ground truth or the prediction).
        organs: organ names, in label order.
        tolerances: the NSD tolerance (mm) of each organ.
        num_classes, checkpoint, use_subvoxels: recorded as they are.
        has_phase: add the per-phase breakdown.
    """

    def overall(cases: Sequence[str]) -> dict:
        return {k: _summary([per_case[c][k] for c in cases]) for k in ORGAN_METRICS}

    result: dict[str, Any] = {
        "n_cases": len(per_case),
        "num_classes": num_classes,
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
        "nsd_tolerance_mm": dict(zip(organs, tolerances)),
        "use_subvoxels": use_subvoxels,
        "overall": overall(list(per_case)),
        "organs": _organ_summary(rows, organs),
        "phases": {},
        "cases": {
            c: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}
            for c, m in per_case.items()
        },
    }
    if has_phase:
        for phase in sorted({m["phase"] for m in per_case.values()}):
            cases = [c for c, m in per_case.items() if m["phase"] == phase]
            result["phases"][phase or "unknown"] = {
                "n_cases": len(cases),
                "overall": overall(cases),
                "organs": _organ_summary([r for r in rows if r.phase == phase], organs),
            }
    return result


def write_segmentation_report(
    output_dir: str, rows: Sequence[OrganRow], result: Mapping, organs: Sequence[str], tolerances: Sequence[float]
) -> str:
    """Write ``seg_metrics.csv`` (``rows``), ``seg_metrics.json`` (``result``, :func:`summarise_segmentation`) and
    ``seg_metrics.md`` (per organ, per phase, per case tables) to ``output_dir``, print the tables, and return
    the markdown's path."""
    write_csv(os.path.join(output_dir, "seg_metrics.csv"), OrganRow._fields, rows)
    write_json(os.path.join(output_dir, "seg_metrics.json"), result)
    md = os.path.join(output_dir, "seg_metrics.md")
    tol = ", ".join(f"{o} {t:g}" for o, t in zip(organs, tolerances))
    if len(set(tolerances)) == 1:
        tol = f"{tolerances[0]:g} for all organs"
    table = {
        organ: {
            "dice": _fmt(s["dice"]),
            "nsd": _fmt(s["nsd"]),
            "n": s["dice"]["n"],
            "absent": s["n_absent"],
            "false positives": s["n_false_positive"],
        }
        for organ, s in result["organs"].items()
    }
    table["mean over cases"] = {k: _fmt(result["overall"][k]) for k in ORGAN_METRICS} | {"n": result["n_cases"]}
    write_metrics_table(
        md,
        table,
        f"Segmentation, {result['n_cases']} cases: Dice and NSD (tolerance in mm: {tol}), mean ± std over the "
        "cases where the organ is in the ground truth or the prediction (FLARE/MONAI convention: predicted but not in "
        "the ground truth scores 0, counted under 'false positives'; in neither is left out, counted in 'absent' "
        "minus 'false positives')",
        ["dice", "nsd", "n", "absent", "false positives"],
    )
    if result["phases"]:
        phases = result["phases"]
        columns = [f"{k} ({p}, n={v['n_cases']})" for p, v in phases.items() for k in ORGAN_METRICS]
        by_phase: dict[str, dict] = {o: {} for o in organs}
        by_phase["mean over cases"] = {}
        for p, v in phases.items():
            for k in ORGAN_METRICS:
                col = f"{k} ({p}, n={v['n_cases']})"
                for o in organs:
                    by_phase[o][col] = _fmt(v["organs"][o][k])
                by_phase["mean over cases"][col] = _fmt(v["overall"][k])
        write_metrics_table(md, by_phase, "Per contrast phase", columns, append=True)
    cases = {
        c: {
            "phase": m["phase"],
            "dice": "n/a" if m["dice"] is None else f"{m['dice']:.4f}",
            "nsd": "n/a" if m["nsd"] is None else f"{m['nsd']:.4f}",
            "absent": m["n_absent"],
            "false positives": m["n_false_positive"],
        }
        for c, m in result["cases"].items()
    }
    write_metrics_table(
        md,
        cases,
        "Per case (mean over the organs in the ground truth or the prediction)",
        ["phase", "dice", "nsd", "absent", "false positives"],
        append=True,
    )
    with open(md) as f:
        text = f.read()
    logger.debug("\n" + text)  # shown once: print() below (info would repeat it on the console)
    print(text, flush=True)
    return md

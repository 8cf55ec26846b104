"""FLARE22-shaped tables of a segmentation evaluation: per case x organ DSC (like Table 4 of the CLEF paper) and
``<organ>_DSC`` / ``<organ>_NSD`` mean and standard deviation (like its Table 5), overall and per contrast phase."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from monai_contrastive.io import atomic_write

__all__ = ["FLARE22_ABBREVIATIONS", "flare_tables"]

FLARE22_ABBREVIATIONS: dict[str, str] = {
    "liver": "Liver",
    "right kidney": "RK",
    "spleen": "Spleen",
    "pancreas": "Pancreas",
    "aorta": "Aorta",
    "inferior vena cava": "IVC",
    "right adrenal gland": "RAG",
    "left adrenal gland": "LAG",
    "gallbladder": "Gallbladder",
    "esophagus": "Esophagus",
    "stomach": "Stomach",
    "duodenum": "Duodenum",
    "left kidney": "LK",
}
"""Column names of the CLEF paper's Tables 4-5 for the FLARE22 organs."""


def _num(v: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _fmt(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.2f}"


def _stats(values: Sequence[float]) -> tuple[float, float, int]:
    a = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if a.size == 0:
        return math.nan, math.nan, 0
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0, int(a.size)


def _tables(rows: list[dict], organs: list[str], names: Mapping[str, str]) -> list[str]:
    cases = list(dict.fromkeys(r["case"] for r in rows))
    by = {(r["case"], r["organ"]): r for r in rows}
    cols = [names.get(o, o) for o in organs]
    out = ["DSC per case (Table 4 shape):", "", "| case | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for c in cases:
        out.append(
            f"| {c} | " + " | ".join(_fmt(_num(by[(c, o)]["dice"])) if (c, o) in by else "-" for o in organs) + " |"
        )
    means = [_stats([_num(by[(c, o)]["dice"]) for c in cases if (c, o) in by])[0] for o in organs]
    out += ["| mean | " + " | ".join(_fmt(m) for m in means) + " |", ""]
    out += [
        "DSC and NSD mean and std over cases (Table 5 shape):",
        "",
        "| Name | Mean | STD | n |",
        "|---|---:|---:|---:|",
    ]
    for metric, tag in (("dice", "DSC"), ("nsd", "NSD")):
        for o in organs:
            m, s, n = _stats([_num(by[(c, o)][metric]) for c in cases if (c, o) in by])
            out.append(f"| {names.get(o, o)}_{tag} | {_fmt(m)} | {_fmt(s)} | {n} |")
    out.append("")
    return out


def flare_tables(
    csv_path: str,
    output_dir: str | None = None,
    names: Mapping[str, str] | None = None,
    filename: str = "flare_tables.md",
) -> str:
    """Write the FLARE22-shaped tables of ``seg_metrics.csv`` (written by
    :class:`~monai_contrastive.evaluation.SegmentationEvaluation`) to ``output_dir/filename``, for all cases and for
    each contrast phase; return the path.

    An organ absent from a case's ground truth has no value for that case ("-" in Table 4, left out of the mean and
    of ``n`` in Table 5); a predicted organ absent from the ground truth is counted in ``seg_metrics.json``'s
    ``n_false_positive``, as SegmentationEvaluation reports it.
    """
    names = dict(FLARE22_ABBREVIATIONS if names is None else names)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{csv_path}: no rows to tabulate.")
    organs = list(dict.fromkeys(r["organ"] for r in rows))
    lines = ["# Segmentation results, FLARE22 layout", "", "## All cases", ""] + _tables(rows, organs, names)
    phases = [p for p in dict.fromkeys(r.get("phase", "") for r in rows) if p]
    for p in phases:
        lines += [f"## Phase: {p}", ""] + _tables([r for r in rows if r.get("phase") == p], organs, names)
    lines.append("Organs absent from a case's ground truth are left out of that organ's values ('-', not in n).")
    path = os.path.join(output_dir or os.path.dirname(csv_path), filename)
    return atomic_write(path, lambda f: f.write("\n".join(lines) + "\n"))

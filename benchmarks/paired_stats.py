"""Paired comparison helpers shared by the AdaCon quality benchmarks (same seeds and data for every method).

Also the Fig. 3 check: the Spearman correlation between the cosine similarity of two samples' features and the
distance of their labels after the ECDF, ``|phi(y_i) - phi(y_j)|``, over every pair of validation samples
(AdaCon Fig. 3e-h; strongly negative = the feature space is ordered by label).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence

import numpy as np

__all__ = ["paired_summary", "paired_reading", "feature_label_spearman", "machine_load", "mean_std"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def paired_summary(base: dict[int, float], other: dict[int, float]) -> dict:
    """Per-seed differences ``other - base`` over the seeds both have, their mean ± std and 95 % t interval, the exact
    two-sided Wilcoxon signed-rank test and a paired t-test (scipy).

    With n paired seeds the smallest two-sided exact Wilcoxon p-value is ``2 / 2^n`` (0.0625 for 5 seeds, 0.031 for
    6): with 5 seeds it cannot reach 0.05 whatever the data, so the per-seed signs are reported as well.
    """
    from scipy.stats import ttest_rel, wilcoxon

    seeds = sorted(set(base) & set(other))
    diffs = [other[s] - base[s] for s in seeds]
    out = {"seeds": seeds, "diffs": diffs, "n": len(seeds)}
    if not seeds:
        return out
    out["mean"], out["std"] = mean_std(diffs)
    if len(seeds) >= 2:
        from scipy.stats import t

        half = float(t.ppf(0.975, len(seeds) - 1)) * out["std"] / math.sqrt(len(seeds))
        out["ci95"] = (out["mean"] - half, out["mean"] + half)
    out["lower_in"] = sum(d < 0 for d in diffs)
    out["min_possible_p"] = 2.0 / 2 ** len(seeds)
    if len(seeds) >= 2 and any(d != 0 for d in diffs):
        try:
            out["wilcoxon_p"] = float(wilcoxon(diffs, alternative="two-sided", method="exact").pvalue)
        except ValueError:
            out["wilcoxon_p"] = float("nan")
        out["ttest_p"] = float(ttest_rel([other[s] for s in seeds], [base[s] for s in seeds]).pvalue)
    return out


def paired_reading(name: str, base_name: str, ps: dict, quantity: str, fmt: str, lower: str, higher: str) -> str:
    """One reading line written from a :func:`paired_summary` (so a report's words cannot disagree with its table):
    the mean ± std difference, its 95 % interval, in how many seeds it is negative, the Wilcoxon p (and the smallest
    p the number of seeds allows) and the verdict at 0.05. ``lower`` / ``higher`` name what a negative / positive
    difference means (e.g. "lower MAE")."""
    p = ps.get("wilcoxon_p")
    ci = f"[{ps['ci95'][0]:{fmt}}, {ps['ci95'][1]:{fmt}}]" if "ci95" in ps else "n/a"
    p_txt = "n/a" if p is None or p != p else f"{p:.3f}"
    if p is not None and p == p and p < 0.05:
        verdict = f"{lower if ps['mean'] < 0 else higher} than {base_name}, significant at 0.05"
    elif ps["min_possible_p"] >= 0.05:
        verdict = f"no test with {ps['n']} seeds can reach 0.05; the signs say {ps['lower_in']} of {ps['n']} {lower}"
    else:
        verdict = f"not distinguishable from {base_name} at 0.05"
    return (
        f"- {name} vs {base_name}, {quantity}: {ps['mean']:+{fmt}} ± {ps['std']:{fmt}} (95 % CI {ci}), {lower} in "
        f"{ps['lower_in']} of {ps['n']} seeds, Wilcoxon p {p_txt} (smallest possible {ps['min_possible_p']:.3f}): "
        f"{verdict}."
    )


def feature_label_spearman(features, labels, ecdf) -> float:
    """Spearman rho of cosine similarity vs ECDF label distance over every pair (Fig. 3e-h); NaN if undefined.

    ``features`` (N, D) tensor or array, ``labels`` (N,), ``ecdf`` the fitted
    :class:`~monai_contrastive.losses.ECDF` of the training labels (loaded from the checkpoint, never refitted).
    """
    import torch
    from scipy.stats import spearmanr

    from monai_contrastive.visualize import pair_similarity_distance

    y = torch.as_tensor(labels, dtype=torch.float64).reshape(-1)
    phi = ecdf(y)
    n = y.numel()
    dist, cos = pair_similarity_distance(features, phi, num_pairs=n * (n - 1) // 2)
    if np.ptp(dist) == 0 or np.ptp(cos) == 0:
        return float("nan")
    return float(spearmanr(dist, cos)[0])


def machine_load() -> str:
    la = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    when = time.strftime("%H:%M UTC", time.gmtime())
    return f"load average {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} (1 / 5 / 15 min) at {when}"

"""Multi-phase CT reports of DCC-CL (Lee et al., Tables 1-4, Fig. 3): Dice per contrast phase, a paired Wilcoxon
signed-rank test between two models' per-case Dice, and the PCA of organ-patch embeddings coloured by phase."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from monai_contrastive.io import atomic_path, atomic_write_json

__all__ = ["organ_embedding_pca", "paired_wilcoxon", "print_dice_per_phase"]


def _load(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"segmentation report {path!r} not found (run the evaluation first).")
    with open(path) as f:
        return json.load(f)


def print_dice_per_phase(metrics_json: str) -> dict[str, float]:
    """Print the mean Dice and NSD of a ``SegmentationEvaluation`` report (``seg_metrics.json``) per contrast phase
    and overall; return ``{phase: mean Dice}`` (with ``"all"``). Organs absent from a case's ground truth are left
    out of its mean; a predicted absent organ scores 0 (MONAI / FLARE convention)."""
    report = _load(metrics_json)
    out = {}
    lines = [f"Dice per contrast phase ({metrics_json}):"]
    for phase, r in sorted(report.get("phases", {}).items()):
        d, n = r["overall"]["dice"], r["overall"].get("nsd", {})
        out[phase] = float(d["mean"])
        lines.append(
            f"  {phase:<14} n={r['n_cases']:<3} Dice {d['mean']:.3f} +- {d['std']:.3f}   "
            f"NSD {n.get('mean', math.nan):.3f}"
        )
    d = report["overall"]["dice"]
    out["all"] = float(d["mean"])
    lines.append(f"  {'all':<14} n={report['n_cases']:<3} Dice {d['mean']:.3f} +- {d['std']:.3f}")
    print("\n".join(lines))
    return out


def paired_wilcoxon(metrics_a: str, metrics_b: str, output_file: str | None = None, metric: str = "dice") -> dict:
    """Paired Wilcoxon signed-rank test (scipy, two-sided) between two models' per-case mean ``metric`` on the same
    cases (Tables 1-2's significance test), overall and per phase.

    Args:
        metrics_a: ``seg_metrics.json`` of model A (e.g. a baseline).
        metrics_b: ``seg_metrics.json`` of model B, scored on the same cases.
        output_file: JSON to write the result to.
        metric: per-case key (``"dice"`` or ``"nsd"``).

    Returns:
        ``{"all": {...}, "phases": {phase: {...}}}`` with ``n``, ``mean_a``, ``mean_b``, ``mean_diff`` (B - A),
        ``diffs`` (per case, B - A), ``statistic`` and ``p_value`` (None with fewer than 2 non-zero differences).

    Raises:
        ValueError: the reports do not cover the same cases (the missing ones are named).
    """
    from scipy.stats import wilcoxon

    a, b = _load(metrics_a)["cases"], _load(metrics_b)["cases"]
    if set(a) != set(b):
        raise ValueError(
            f"paired_wilcoxon: {metrics_a} and {metrics_b} score different cases (only in A: {sorted(set(a) - set(b))},"
            f" only in B: {sorted(set(b) - set(a))})."
        )
    cases = sorted(c for c in a if a[c].get(metric) is not None and b[c].get(metric) is not None)

    def test(subset: Sequence[str]) -> dict:
        xa = np.array([a[c][metric] for c in subset], dtype=float)
        xb = np.array([b[c][metric] for c in subset], dtype=float)
        diffs = xb - xa
        stat = p = None
        if np.count_nonzero(diffs) >= 2:
            res = wilcoxon(xb, xa)
            stat, p = float(res.statistic), float(res.pvalue)
        return {
            "n": len(subset),
            "mean_a": float(xa.mean()) if len(subset) else None,
            "mean_b": float(xb.mean()) if len(subset) else None,
            "mean_diff": float(diffs.mean()) if len(subset) else None,
            "diffs": {c: float(d) for c, d in zip(subset, diffs)},
            "statistic": stat,
            "p_value": p,
        }

    result = {"metric": metric, "a": metrics_a, "b": metrics_b, "all": test(cases), "phases": {}}
    for phase in sorted({str(a[c].get("phase")) for c in cases}):
        result["phases"][phase] = test([c for c in cases if str(a[c].get("phase")) == phase])
    r = result["all"]
    print(f"paired Wilcoxon ({metric}, B - A) over {r['n']} cases: {r['mean_diff']:+.4f}, p = {r['p_value']}")
    if output_file:
        os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
        atomic_write_json(result, output_file)
    return result


def _pooled_features(network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(B, F)`` pooled deepest encoder features of a DCC pretraining network or a DeepLabV3+."""
    encoder = getattr(network, "encoder", network)
    out = encoder(x)
    if isinstance(out, (list, tuple)):
        out = out[-1]
    if isinstance(out, Mapping):
        out = out["features"]
    return out.flatten(2).mean(2) if out.ndim > 2 else out


def organ_embedding_pca(
    network: torch.nn.Module,
    dataset: Sequence[Mapping[str, Any]],
    output_file: str,
    phases: Sequence[str],
    organ_names: Mapping[Any, str] | Sequence[str] | None = None,
    organs: Sequence[int] | None = None,
    image_key: str = "image",
    organ_key: str = "organ",
    phase_key: str = "phase_index",
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    dpi: int = 120,
) -> dict:
    """Fig. 3 of DCC-CL: the encoder features of organ patches projected on their first two principal components,
    one panel per organ, points coloured by contrast phase.

    Args:
        network: the encoder's network (pretraining net or the fine-tuned DeepLabV3+; its ``encoder`` is used).
        dataset: organ-patch items with the 2-channel ``image_key`` ``(2, P, P)``, ``organ_key`` and ``phase_key``.
        output_file: PNG to write.
        phases: phase names by index.
        organ_names: ``channel_def`` or names of organs ``1 ..``.
        organs: organ classes to plot (default: every organ present, at most 6).
        batch_size, device: inference settings.

    Returns:
        ``{"path", "n_patches", "explained_variance": {organ: [pc1, pc2]}}``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = [dataset[i] for i in range(len(dataset))]
    if not items or any(phase_key not in it for it in items):
        raise ValueError(f"organ_embedding_pca: the patches need {phase_key!r} (datalist items with a 'phase').")
    dev = torch.device(device)
    network = network.to(dev).eval()
    feats = []
    with torch.no_grad():
        for s in range(0, len(items), batch_size):
            x = torch.stack([torch.as_tensor(it[image_key]).float() for it in items[s : s + batch_size]]).to(dev)
            feats.append(_pooled_features(network, x).cpu())
    z = torch.cat(feats).numpy()
    organ = np.array([int(it[organ_key]) for it in items])
    phase = np.array([int(it[phase_key]) for it in items])
    if isinstance(organ_names, Mapping):
        names = {int(k): v for k, v in organ_names.items()}
    else:
        names = {i + 1: n for i, n in enumerate(organ_names or [])}
    chosen = list(organs) if organs is not None else sorted(set(organ.tolist()))[:6]
    fig = Figure(figsize=(3.2 * len(chosen), 3.2), dpi=dpi)
    FigureCanvasAgg(fig)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    explained = {}
    for k, o in enumerate(chosen):
        ax = fig.add_subplot(1, len(chosen), k + 1)
        sel = organ == o
        zc = z[sel] - z[sel].mean(0)
        if zc.shape[0] >= 2:
            _, s, vt = np.linalg.svd(zc, full_matrices=False)
            pcs = zc @ vt[:2].T
            var = (s**2) / max((s**2).sum(), 1e-12)
            explained[names.get(o, str(o))] = [float(v) for v in var[:2]]
        else:
            pcs = np.zeros((zc.shape[0], 2))
        for p, pname in enumerate(phases):
            m = phase[sel] == p
            if m.any():
                ax.scatter(pcs[m, 0], pcs[m, 1], s=8, c=colours[p % len(colours)], label=pname)
        ax.set_title(names.get(o, f"organ {o}"), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if k == 0:
            ax.legend(fontsize=6, loc="best")
    fig.suptitle("organ-patch encoder features, PCA, coloured by contrast phase", fontsize=9)
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    with atomic_path(output_file, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    print(f"wrote the organ embedding PCA figure to {output_file}")
    return {"path": output_file, "n_patches": len(items), "explained_variance": explained}

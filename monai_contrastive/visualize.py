"""Feature-space figures of a contrastive regression model (AdaCon, Dai et al., IEEE TMI, Fig. 3).

:func:`feature_figure` draws the two panels of AdaCon Fig. 3 for one model: the angular plot of the L2-normalised
projections (Fig. 3a-d) and the scatter of pairwise feature similarity against the ECDF label distance
(Fig. 3e-h). :func:`feature_figure_for_bundle` computes the projections of a trained bundle fold on its validation
items and draws the figure.

Matplotlib is used through its object API with the Agg canvas, so importing this module neither selects a backend
nor touches pyplot's global state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["feature_figure", "feature_figure_for_bundle", "angular_positions", "pair_similarity_distance"]


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        x = x.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values.")
    return arr


def _plain(x: Any) -> torch.Tensor:
    """A detached plain tensor (MetaTensor metadata dropped)."""
    x = torch.as_tensor(x)
    return (x.as_tensor() if hasattr(x, "as_tensor") else x).detach()


def _normalise(embeddings: np.ndarray) -> np.ndarray:
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {embeddings.shape}.")
    norm = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError("embeddings contain an all-zero row: its cosine similarity is undefined.")
    return embeddings / norm


def _min_cosine_pair(z: np.ndarray, chunk: int = 2048) -> tuple[int, int, float]:
    """Indices ``(i, j)``, ``i != j``, of the least similar pair of unit rows and their cosine (row chunks)."""
    n = z.shape[0]
    best = (0, 1, np.inf)
    for start in range(0, n, chunk):
        block = z[start : start + chunk] @ z.T
        rows = np.arange(block.shape[0])
        block[rows, start + rows] = np.inf  # exclude i == j
        flat = int(np.argmin(block))
        r, c = divmod(flat, n)
        if block[r, c] < best[2]:
            best = (start + r, c, float(block[r, c]))
    return best


def angular_positions(embeddings: np.ndarray | torch.Tensor) -> tuple[np.ndarray, tuple[int, int]]:
    """Angles of the samples on the half plane of the angular plot (AdaCon Fig. 3a-d).

    The two samples with the minimum cosine similarity are the endpoints ``e1`` (angle 0) and ``e2`` (angle
    ``theta_12 = arccos(cos(e1, e2))``). Every sample ``z`` gets two angle estimates from its cosine similarity with
    the endpoints, ``arccos(cos(z, e1))`` and ``theta_12 - arccos(cos(z, e2))``; its angle is their mean, clipped to
    ``[0, theta_12]``. Both estimates agree for a sample on the great circle through ``e1`` and ``e2``; the
    endpoints land exactly at ``0`` and ``theta_12``.

    Args:
        embeddings: ``(N, D)`` features, L2-normalised here.

    Returns:
        ``(angles (N,) in [0, pi], (index of e1, index of e2))``.
    """
    z = _normalise(_to_numpy(embeddings, "embeddings"))
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"embeddings must be (N, D) with N >= 2, got shape {z.shape}.")
    i, j, c12 = _min_cosine_pair(z)
    theta_12 = float(np.arccos(np.clip(c12, -1.0, 1.0)))
    a1 = np.arccos(np.clip(z @ z[i], -1.0, 1.0))
    a2 = theta_12 - np.arccos(np.clip(z @ z[j], -1.0, 1.0))
    angles = np.clip(0.5 * (a1 + a2), 0.0, theta_12)
    angles[i], angles[j] = 0.0, theta_12
    return angles, (i, j)


def pair_similarity_distance(
    embeddings: np.ndarray | torch.Tensor,
    ecdf_values: np.ndarray | torch.Tensor,
    num_pairs: int = 2000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and ECDF label distance of random pairs ``i != j`` (AdaCon Fig. 3e-h).

    When the data have at most ``num_pairs`` distinct pairs, every pair is used once.

    Returns:
        ``(|phi(y_i) - phi(y_j)| (P,), cos(z_i, z_j) (P,))``.
    """
    z = _normalise(_to_numpy(embeddings, "embeddings"))
    phi = _to_numpy(ecdf_values, "ecdf_values").reshape(-1)
    n = z.shape[0]
    if phi.shape[0] != n:
        raise ValueError(f"ecdf_values has {phi.shape[0]} entries for {n} embeddings.")
    if n < 2:
        raise ValueError("at least two samples are needed to form pairs.")
    if n * (n - 1) // 2 <= num_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=num_pairs)
        j = (i + rng.integers(1, n, size=num_pairs)) % n  # uniform over j != i
    cos = np.einsum("pd,pd->p", z[i], z[j])
    return np.abs(phi[i] - phi[j]), cos


def feature_figure(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | Sequence[float],
    ecdf_values: np.ndarray | torch.Tensor | Sequence[float],
    out_path: str,
    title: str = "",
    num_pairs: int = 2000,
    seed: int = 0,
    cmap: str = "coolwarm",
    dpi: int = 150,
) -> dict[str, Any]:
    """Write a PNG with the two panels of AdaCon Fig. 3 for one set of features.

    Left (Fig. 3a-d): the angular plot. The two samples with the minimum cosine similarity are the endpoints and
    every sample is a line from the origin on the upper half plane, at the angle given by its cosine similarity with
    the endpoints (see :func:`angular_positions`), coloured by its label from blue (low) to red (high), with a
    colour bar. A wide, ordered blue-to-red fan is what AdaCon aims for.

    Right (Fig. 3e-h): for ``num_pairs`` random pairs, the cosine similarity of the features against the label
    distance after the ECDF, ``|phi(y_i) - phi(y_j)|``, with a least-squares line and the Spearman rank correlation
    in the legend. A distinct downward trend (strongly negative Spearman) is what AdaCon aims for.

    Args:
        embeddings: ``(N, D)`` projections (L2-normalised here; normalised inputs are left unchanged).
        labels: ``(N,)`` labels, used for the colours.
        ecdf_values: ``(N,)`` ``phi(y)`` from the ECDF fitted on the training labels (eq. 5).
        out_path: PNG file to write; its folder is created.
        title: figure title.
        num_pairs: random pairs of the scatter plot.
        seed: seed of the pair sampling.
        cmap: matplotlib colormap for the labels (blue to red).
        dpi: resolution.

    Returns:
        ``{"path": out_path, "spearman": rho, "spearman_p": p_value, "slope": fitted slope, "endpoints": (i, j),
        "min_cosine": cos(e1, e2), "num_pairs": pairs used}``. ``rho`` is NaN when either axis is constant.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from scipy.stats import spearmanr

    z = _normalise(_to_numpy(embeddings, "embeddings"))
    y = _to_numpy(labels, "labels").reshape(-1)
    phi = _to_numpy(ecdf_values, "ecdf_values").reshape(-1)
    if z.ndim != 2 or not (z.shape[0] == y.shape[0] == phi.shape[0]):
        raise ValueError(
            f"expected embeddings (N, D), labels (N,), ecdf_values (N,); got {z.shape}, {y.shape}, {phi.shape}."
        )
    angles, (i, j) = angular_positions(z)
    dist, cos = pair_similarity_distance(z, phi, num_pairs, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho, p_value = spearmanr(dist, cos)
    rho, p_value = float(rho), float(p_value)
    slope, intercept = np.polyfit(dist, cos, 1) if np.ptp(dist) > 0 else (np.nan, float(np.mean(cos)))

    fig = Figure(figsize=(11.0, 4.6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax_ang, ax_sc = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.25, 1.0]})
    norm = Normalize(vmin=float(y.min()), vmax=float(y.max()) if y.max() > y.min() else float(y.min()) + 1.0)
    colormap = ScalarMappable(norm=norm, cmap=cmap)

    # (left) angular plot; random drawing order so that neither end of the label range hides the other
    order = np.random.default_rng(seed).permutation(z.shape[0])
    ends = np.stack([np.cos(angles), np.sin(angles)], axis=1)[order]
    segments = np.stack([np.zeros_like(ends), ends], axis=1)
    alpha = float(np.clip(30.0 / np.sqrt(z.shape[0]), 0.15, 0.9))
    lines = LineCollection(segments, colors=colormap.to_rgba(y[order]), linewidths=0.8, alpha=alpha)
    ax_ang.add_collection(lines)
    ax_ang.scatter(ends[:, 0], ends[:, 1], c=y[order], cmap=cmap, norm=norm, s=6, linewidths=0)
    t = np.linspace(0.0, np.pi, 200)
    ax_ang.plot(np.cos(t), np.sin(t), color="0.8", linewidth=0.6, zorder=0)
    ax_ang.plot([-1.0, 1.0], [0.0, 0.0], color="0.5", linewidth=0.6, zorder=0)
    theta_12 = float(angles[j])
    for k, name in ((i, "e1"), (j, "e2")):
        ax_ang.annotate(
            f"{name} (y={y[k]:.3g})",
            (np.cos(angles[k]), np.sin(angles[k])),
            xytext=(1.12 * np.cos(angles[k]), 1.08 * np.sin(angles[k]) + 0.03),
            ha="center",
            fontsize=8,
        )
    ax_ang.set_xlim(-1.25, 1.25)
    ax_ang.set_ylim(-0.05, 1.2)
    ax_ang.set_aspect("equal")
    ax_ang.set_xticks([])
    ax_ang.set_yticks([])
    for side in ("top", "right", "left", "bottom"):
        ax_ang.spines[side].set_visible(False)
    ax_ang.set_title(
        f"angular plot (N={z.shape[0]}, min cos={float(np.cos(theta_12)):.3f}, span={np.degrees(theta_12):.0f}°)",
        fontsize=9,
    )
    fig.colorbar(colormap, ax=ax_ang, fraction=0.04, pad=0.02, label="label")

    # (right) pairwise similarity vs ECDF label distance
    ax_sc.scatter(dist, cos, s=4, alpha=0.35, color="tab:blue", linewidths=0, label=f"{dist.shape[0]} random pairs")
    if np.isfinite(slope):
        xs = np.linspace(0.0, float(dist.max()), 50)
        ax_sc.plot(
            xs,
            slope * xs + intercept,
            color="tab:red",
            linewidth=1.5,
            label=f"linear fit (slope={slope:.3f}); Spearman ρ={rho:.3f}",
        )
    else:
        ax_sc.plot([], [], " ", label=f"Spearman ρ={rho:.3f}")
    ax_sc.set_xlabel(r"label distance $|\phi(y_i) - \phi(y_j)|$")
    ax_sc.set_ylabel(r"feature similarity $\cos(z_i, z_j)$")
    ax_sc.set_xlim(left=0.0)
    ax_sc.legend(loc="upper right", fontsize=8, markerscale=3)
    ax_sc.set_title("feature similarity vs ECDF label distance", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(out_path, format="png")
    return {
        "path": out_path,
        "spearman": rho,
        "spearman_p": p_value,
        "slope": float(slope),
        "endpoints": (int(i), int(j)),
        "min_cosine": float(np.cos(theta_12)),
        "num_pairs": int(dist.shape[0]),
    }


def feature_figure_for_bundle(
    bundle_root: str,
    fold: int = 0,
    out: str | None = None,
    config_files: Sequence[str] | None = None,
    figure_kwargs: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """AdaCon Fig. 3 for a trained fold of a bundle, on that fold's validation items.

    Reads ``<bundle_root>/configs/<f>`` for ``f`` in ``config_files`` (default ``["train.json"]``; e.g.
    ``["train.json", "demo.json"]`` for the demo setting) with :class:`monai.bundle.ConfigParser`, sets
    ``bundle_root``, ``fold`` and ``overrides`` (config ids, ``"a#b"`` for nested ones; pass them as
    ``**{"validate#dataloader#batch_size": 8}`` when the id is not a Python name), and builds ``network_def``,
    ``validate#preprocessing`` and ``val_items``. The weights and the ECDF come from the fold's model
    (``configs/commands.json``'s ``checkpoints.fold_checkpoints``, default ``models/fold<fold>/model.pt``:
    ``{"model": state_dict, "ecdf": ECDF state dict}``, as written by the bundle's best-model saver); the ECDF is
    loaded, never refitted. The projections (``"embedding"`` output) of every validation item are computed in eval
    mode without gradients (batch 32) on the config's ``device`` (CPU when the config has none) and passed to
    :func:`feature_figure`.

    Args:
        bundle_root: the bundle folder.
        fold: the cross-validation fold.
        out: PNG path; default ``<bundle_root>/eval/feature_figure_fold<fold>.png``.
        config_files: config files under ``<bundle_root>/configs``, merged in order.
        figure_kwargs: extra arguments of :func:`feature_figure` (``num_pairs``, ``seed``, ``title``, ``cmap``...).
        overrides: config ids to override.

    Returns:
        The dict of :func:`feature_figure` (``"path"``, ``"spearman"``...).

    Raises:
        FileNotFoundError: when the fold's checkpoint or a config file is missing.
    """
    from monai_contrastive.bundles import checkpoint_layout

    pattern = checkpoint_layout(bundle_root).fold_checkpoints or "models/fold{fold}/model.pt"
    ckpt = os.path.join(bundle_root, pattern.format(fold=fold))
    if not os.path.isfile(ckpt):
        raise FileNotFoundError(
            f"checkpoint {ckpt!r} not found: train fold {fold} of the bundle first (it writes the best model there)."
        )
    files = [os.path.join(bundle_root, "configs", f) for f in (config_files or ["train.json"])]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"bundle config file(s) not found: {missing}.")

    from monai.bundle import ConfigParser
    from monai.data import DataLoader, Dataset

    from monai_contrastive.io import read_state_dict
    from monai_contrastive.losses import ECDF

    parser = ConfigParser()
    parser.read_config(files)
    parser["bundle_root"] = bundle_root
    parser["fold"] = fold
    parser.update(overrides)

    device = torch.device(parser.get_parsed_content("device") if "device" in parser else "cpu")
    network = parser.get_parsed_content("network_def")
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    items = parser.get_parsed_content("val_items")
    if not items:
        raise ValueError(f"fold {fold} of {bundle_root!r} has no validation items.")

    state = read_state_dict(ckpt, what="checkpoint")
    if not isinstance(state, dict) or "model" not in state or "ecdf" not in state:
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise KeyError(f"checkpoint {ckpt!r} must hold 'model' and 'ecdf' entries, found {keys}.")
    network.load_state_dict(state["model"])
    ecdf = ECDF()
    ecdf.load_state_dict(state["ecdf"])
    if hasattr(network, "output_key"):
        network.output_key = "embedding"  # skip the regression head; inference configs may select "pred"
    network = network.to(device).eval()

    loader = DataLoader(Dataset(items, preprocessing), batch_size=32, shuffle=False, num_workers=0)
    embeddings, labels = [], []
    with torch.no_grad():
        for batch in loader:
            out_net = network(batch["image"].to(device))
            emb = out_net["embedding"] if isinstance(out_net, dict) else out_net
            embeddings.append(_plain(emb).float().cpu())
            labels.append(_plain(batch["label"]).reshape(-1).double().cpu())
    z = torch.cat(embeddings)
    y = torch.cat(labels)
    phi = ecdf(y)

    out = out or os.path.join(bundle_root, "eval", f"feature_figure_fold{fold}.png")
    kwargs = {"title": f"{os.path.basename(os.path.abspath(bundle_root))}, fold {fold} (validation)"}
    kwargs.update(figure_kwargs or {})
    return feature_figure(z, y, phi, out, **kwargs)

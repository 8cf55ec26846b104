"""Figures of the evaluation runs that need more than a line plot: the segmentation overlay."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["label_colours", "segmentation_overlay"]


def label_colours(num_classes: int) -> np.ndarray:
    """(num_classes, 4) RGBA per label value, background transparent; organ ``c`` always gets one colour."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    colours = np.zeros((num_classes, 4))
    for c in range(1, num_classes):
        # tab20 pairs a dark and a light shade of each hue: the 10 dark hues first, then the light ones
        k = (c - 1) % 20
        colours[c] = cmap(2 * k if k < 10 else 2 * (k - 10) + 1)
        colours[c, 3] = 0.6
    return colours


def segmentation_overlay(
    panels: Sequence[Mapping],
    organs: Sequence[str],
    path: str,
    window_hu: tuple[float, float] = (-160.0, 240.0),
) -> str | None:
    """Ground truth and prediction side by side over the CT, one panel pair per case, one fixed colour per organ.

    Args:
        panels: per case ``{"case", "image" (2D HU or None), "gt", "pred" (2D label maps), "aspect", "title"}``.
        organs: organ names of label values ``1 ..`` (the legend).
        path: the PNG to write.
        window_hu: CT display window.

    Returns:
        ``path``, or None when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    num_classes = len(organs) + 1
    colours = label_colours(num_classes)
    per_row = min(len(panels), 3)
    nrows = math.ceil(len(panels) / per_row)
    legend_rows = math.ceil(len(organs) / 5)
    height = 2.8 * nrows + 0.25 * legend_rows + 0.2
    fig, axes = plt.subplots(
        nrows, 2 * per_row, figsize=(2.5 * 2 * per_row, height), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for k, p in enumerate(panels):
        r, c = divmod(k, per_row)
        for j, (key, what) in enumerate((("gt", "ground truth"), ("pred", "prediction"))):
            ax = axes[r, 2 * c + j]
            lab = np.clip(p[key], 0, num_classes - 1)
            if p["image"] is not None:
                lo, hi = window_hu
                ax.imshow(p["image"], cmap="gray", vmin=lo, vmax=hi, aspect=p["aspect"], interpolation="nearest")
            else:
                ax.imshow(np.zeros(lab.shape), cmap="gray", vmin=0, vmax=1, aspect=p["aspect"])
            ax.imshow(colours[lab], aspect=p["aspect"], interpolation="nearest")
            ax.set_title(f"{p['case']}: {what}" + (f"\n{p['title']}" if j else ""), fontsize=7)
    handles = [Patch(facecolor=colours[c, :3], label=o) for c, o in enumerate(organs, 1)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=7, frameon=False)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""Training-label summaries that a regression bundle fits once on its training items: the label statistics that
initialise the regression output and the label list of the ECDF (AdaCon's adaptive margin)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["item_labels", "label_statistics"]


def item_labels(items: Sequence[Mapping], key: str = "label") -> list[float]:
    """The regression labels of ``items`` (``[{"image": ..., "label": 0.83}, ...]``) as floats, in item order.

    Args:
        items: datalist items, e.g. a bundle's ``train#dataset#data``.
        key: the label key.

    Raises:
        ValueError: ``items`` is empty, or an item's label is missing, not a number or not finite (the message
            names the item index and its image).
    """
    if not len(items):
        raise ValueError(f"no items to take {key!r} labels from (the training list is empty).")
    labels = []
    for i, item in enumerate(items):
        where = f"item {i} ({item.get('image', '?')!r})" if isinstance(item, Mapping) else f"item {i}"
        if not isinstance(item, Mapping) or key not in item:
            raise ValueError(f"{where} has no {key!r}.")
        try:
            value = float(item[key])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {key!r} is not a number ({item[key]!r}).") from None
        if not math.isfinite(value):
            raise ValueError(f"{where}: {key!r} is {value}.")
        labels.append(value)
    return labels


def label_statistics(items: Sequence[Mapping], key: str = "label") -> dict[str, float]:
    """Mean and sample standard deviation (``ddof=1``, float64) of the labels of ``items``.

    Returns:
        ``{"mean": ..., "std": ..., "count": n}``; ``std`` is 0.0 for a single item.

    Raises:
        ValueError: as :func:`item_labels`.
    """
    labels = np.asarray(item_labels(items, key), dtype=np.float64)
    std = float(labels.std(ddof=1)) if labels.size > 1 else 0.0
    return {"mean": float(labels.mean()), "std": std, "count": int(labels.size)}

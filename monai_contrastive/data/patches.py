"""A dataset of patches extracted once from (cached) volumes, shuffled and transformed per access."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from monai.transforms import Randomizable, apply_transform
from torch.utils.data import Dataset

__all__ = ["FlattenedPatchDataset"]


class FlattenedPatchDataset(Dataset):
    """Every patch of every volume as one item: ``patch_func(volumes[i])`` (a list of patch dicts) is run once per
    volume at construction, and ``transform`` (the random views) is applied to a patch each time it is read.

    This is how DCC-CL trains (§3.1; the authors extract the organ patches once and then shuffle them in batches of
    4): a batch mixes patches of different volumes, organs and phases, which a per-volume batch (MONAI's crop
    samplers) would not. ``volumes`` is typically a ``PersistentDataset`` whose cached part loads, normalises and
    coarse-segments each volume, so the expensive part runs once per volume across runs.

    Args:
        volumes: a sequence of volume items (e.g. a MONAI dataset).
        patch_func: volume item -> list of patch items (e.g. ``OrganPatchesd``).
        transform: applied to a patch item on every access.
        seed: seeds ``patch_func`` (when it is ``Randomizable``) once, so the same volumes give the same patches.

    Raises:
        ValueError: no patch was extracted (nothing to train on); the message says from how many volumes.
    """

    def __init__(
        self, volumes: Sequence, patch_func: Callable[[Any], list], transform: Callable | None = None, seed: int = 0
    ) -> None:
        if isinstance(patch_func, Randomizable):
            patch_func.set_random_state(seed=seed)
        self.patches: list = []
        self.volume_index: list[int] = []
        for i in range(len(volumes)):
            out = patch_func(volumes[i])
            out = out if isinstance(out, (list, tuple)) else [out]
            self.patches.extend(out)
            self.volume_index.extend([i] * len(out))
        if not self.patches:
            raise ValueError(f"FlattenedPatchDataset: no patch from {len(volumes)} volume(s); nothing to train on.")
        self.transform = transform
        self.counts = np.bincount(self.volume_index, minlength=len(volumes))

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int) -> Any:
        item = dict(self.patches[index])
        return apply_transform(self.transform, item) if self.transform is not None else item

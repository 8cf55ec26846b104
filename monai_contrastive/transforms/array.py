"""Array transforms for multi-view contrastive learning."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.transforms import Randomizable, Transform

__all__ = ["RandMultiView"]


class RandMultiView(Randomizable, Transform):
    """Apply a random transform ``num_views`` times to one image and stack the results: ``(C, ...)`` -> ``(V, C, ...)``.

    This is batch augmentation (Hoffer et al., arXiv:1901.09335; AdaCon §IV-A uses 8 samples x 8 views): each call
    of the wrapped random transform draws afresh, so the views are independent augmentations of one sample.
    ``set_random_state`` is forwarded to the wrapped transform, so the whole pipeline is reproducible.

    Args:
        transform: a (random) transform on one image.
        num_views: V.
    """

    def __init__(self, transform: Callable, num_views: int = 2) -> None:
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}.")
        self.transform = transform
        self.num_views = int(num_views)

    def set_random_state(self, seed: int | None = None, state=None) -> RandMultiView:
        super().set_random_state(seed, state)
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        pass

    def __call__(self, img):
        views = [torch.as_tensor(self.transform(img)) for _ in range(self.num_views)]
        return torch.stack(views, dim=0)

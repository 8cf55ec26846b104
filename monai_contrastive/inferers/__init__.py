"""Inferers for networks that return a dict of named outputs, and the coarse-to-fine DCC-CL volume inference."""

from __future__ import annotations

from .coarse_to_fine import CoarseInferer, CoarseToFineInferer, majority_vote, tile_centres
from .inferer import SelectOutputInferer

__all__ = ["CoarseInferer", "CoarseToFineInferer", "SelectOutputInferer", "majority_vote", "tile_centres"]

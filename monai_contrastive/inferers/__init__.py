"""Inferers for networks that return a dict of named outputs, the coarse-to-fine DCC-CL volume inference, and a
profiling wrapper (seconds and memory per case)."""

from __future__ import annotations

from .coarse_to_fine import CoarseInferer, CoarseToFineInferer, majority_vote, tile_centres
from .inferer import SelectOutputInferer
from .profiled import ProfiledInferer, peak_rss_mib

__all__ = [
    "CoarseInferer",
    "CoarseToFineInferer",
    "ProfiledInferer",
    "SelectOutputInferer",
    "majority_vote",
    "peak_rss_mib",
    "tile_centres",
]

"""Label and phase vocabularies of the CT bundles (FLARE22 organ order)."""

from __future__ import annotations

__all__ = ["CONTRAST_PHASES", "FLARE22_ORGANS", "flare22_channel_def"]

FLARE22_ORGANS: tuple[str, ...] = (
    "liver",
    "right kidney",
    "spleen",
    "pancreas",
    "aorta",
    "inferior vena cava",
    "right adrenal gland",
    "left adrenal gland",
    "gallbladder",
    "esophagus",
    "stomach",
    "duodenum",
    "left kidney",
)
"""The 13 FLARE22 organs; label value ``i + 1`` is ``FLARE22_ORGANS[i]``, 0 is background."""

CONTRAST_PHASES: tuple[str, ...] = ("non_contrast", "arterial", "portal_venous", "delayed")
"""Contrast phases as written in the ``phase`` field of a CT datalist item."""


def flare22_channel_def() -> dict[str, str]:
    """``{"0": "background", "1": "liver", ...}``: a bundle's ``channel_def`` / a Decathlon ``labels`` entry."""
    return {"0": "background", **{str(i + 1): name for i, name in enumerate(FLARE22_ORGANS)}}

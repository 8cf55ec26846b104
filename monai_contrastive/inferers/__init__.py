"""Inferers for networks that return a dict of named outputs, and a profiling wrapper (seconds and memory per case)."""

from __future__ import annotations

from .inferer import SelectOutputInferer
from .profiled import ProfiledInferer, peak_rss_mib

__all__ = ["ProfiledInferer", "SelectOutputInferer", "peak_rss_mib"]

"""Inferers for networks that return a dict of named outputs."""

from __future__ import annotations

from .inferer import SelectOutputInferer

__all__ = ["SelectOutputInferer"]

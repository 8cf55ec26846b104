"""Fixtures shared by the test packages."""

from __future__ import annotations

import pytest

from .monailabel_harness import monailabel_python, skip_reason


@pytest.fixture(scope="module")
def ml_python():
    """The MONAI Label virtualenv's python (created on first use where allowed); skips the test without it."""
    python = monailabel_python()
    if python is None:
        pytest.skip(skip_reason())
    return python

"""Shared helpers of the bundle tests."""

from __future__ import annotations

import os

import pytest
from monai.bundle import ConfigWorkflow


def _workflow(root: str, files: list[str], workflow_type: str = "train", **overrides) -> ConfigWorkflow:
    """An initialised ``ConfigWorkflow`` of the bundle at ``root`` with ``files`` from its configs folder."""
    wf = ConfigWorkflow(
        config_file=[os.path.join(root, "configs", f) for f in files],
        meta_file=os.path.join(root, "configs", "metadata.json"),
        workflow_type=workflow_type,
        bundle_root=root,
        **overrides,
    )
    wf.initialize()
    return wf


@pytest.fixture
def workflow():
    """``workflow(root, files, workflow_type="train", **overrides)`` -> an initialised ``ConfigWorkflow``."""
    return _workflow

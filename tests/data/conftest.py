"""Fixtures shared by the data tests."""

from __future__ import annotations

import pytest

from monai_contrastive.data.synthetic_echo import generate_echo_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    """A small synthetic EchoNet-Dynamic folder (6 videos), generated once per test module."""
    pytest.importorskip("cv2")
    return generate_echo_demo(str(tmp_path_factory.mktemp("echo") / "EchoNet"), num_videos=6, seed=0, frames=(64, 80))

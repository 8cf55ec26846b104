"""Small modules shared by the tests."""

from __future__ import annotations

import torch


class TinyBackbone(torch.nn.Module):
    """A classification backbone in miniature: conv features, global pooling, a classifier ``fc`` to remove."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))

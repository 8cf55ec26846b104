from __future__ import annotations

import pytest
import torch

from monai_contrastive.inferers import SelectOutputInferer


class _DictNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 1)
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return {"pred": self.fc(x), "proj": x}


def test_select_output():
    net = _DictNet()
    x = torch.rand(3, 4)
    torch.testing.assert_close(SelectOutputInferer()(x, net), net.fc(x))
    torch.testing.assert_close(SelectOutputInferer("proj")(x, net), x)
    with pytest.raises(KeyError, match="'nope'.*outputs: \\['pred', 'proj'\\]"):
        SelectOutputInferer("nope")(x, net)
    # a network returning a tensor is passed through
    assert SelectOutputInferer()(x, net.fc).shape == (3, 1)


def test_average_views_in_chunks():
    net = _DictNet()
    x = torch.rand(2, 3, 4)  # (B, V, features)
    out = SelectOutputInferer("pred", average_views=True, views_per_batch=4)(x, net)
    assert out.shape == (2, 1) and net.calls == [4, 2]
    torch.testing.assert_close(out, net.fc(x).mean(1))

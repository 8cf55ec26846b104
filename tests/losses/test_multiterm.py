"""MultiTermLoss composes named, weighted terms from outputs and batch; InfoNCE against its loop form."""

from __future__ import annotations

import math

import pytest
import torch

from monai_contrastive.losses import ECDF, InfoNCELoss, LossTerm, MultiTermLoss


def test_multiterm_weights_inputs_views_and_subterms():
    pred = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    batch = {"label": torch.tensor([[1.5], [2.0], [2.0], [5.0]]), "view": torch.tensor([0, 0, 1, 1])}

    def with_subterms(a, b):
        d = (a - b).abs().mean()
        return d, {"max": (a - b).abs().max()}

    loss = MultiTermLoss(
        {
            "l1": {"loss": torch.nn.L1Loss(), "weight": 2.0},
            "first": LossTerm(torch.nn.L1Loss(), 0.5, ["pred", "label"], views=[0]),
            "ecdf": {"loss": lambda p: p.sum(), "weight": 1.0, "inputs": [[ECDF([0.0, 1.0, 2.0, 3.0]), "pred"]]},
            "off": {"loss": lambda: 1 / 0, "weight": 0.0, "inputs": []},
            "sub": {"loss": with_subterms, "weight": 1.0},
        }
    )
    total, terms = loss(pred, batch)  # a tensor output counts as {"pred": tensor}
    l1 = (0.5 + 0 + 1 + 1) / 4
    first = (0.5 + 0) / 2
    ecdf = 0.5 + 0.75 + 1.0 + 1.0  # phi(1)=2/4, phi(2)=3/4, phi(3)=phi(4)=1
    assert terms["l1"].item() == pytest.approx(l1) and terms["first"].item() == pytest.approx(first)
    assert terms["ecdf"].item() == pytest.approx(ecdf) and "off" not in terms
    assert terms["sub_max"].item() == pytest.approx(1.0)
    assert total.item() == pytest.approx(2 * l1 + 0.5 * first + ecdf + l1)
    with pytest.raises(KeyError, match="'nope'"):
        MultiTermLoss({"x": {"loss": torch.nn.L1Loss(), "inputs": ["pred", "nope"]}})(pred, batch)
    with pytest.raises(ValueError, match="weight 0"):
        MultiTermLoss({"x": {"loss": torch.nn.L1Loss(), "weight": 0}})
    with pytest.raises(ValueError, match="name or a"):
        LossTerm(torch.nn.L1Loss(), inputs=[3])


def loop_infonce(q, k, queue, tau):
    out = []
    for i in range(q.shape[0]):
        logits = [float(q[i] @ k[i]) / tau] + [float(q[i] @ queue[j]) / tau for j in range(queue.shape[0])]
        out.append(-logits[0] + math.log(sum(math.exp(v) for v in logits)))
    return out


def test_infonce_matches_loop_and_gradient_reaches_query_only():
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    k = torch.nn.functional.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    queue = torch.nn.functional.normalize(torch.randn(7, 8, generator=g, dtype=torch.float64), dim=1)
    per = InfoNCELoss(0.07, reduction="none")(q, k, queue)
    assert per.detach().tolist() == pytest.approx(loop_infonce(q.detach(), k.detach(), queue, 0.07), rel=1e-5)
    mean = InfoNCELoss(0.07)(q, k, queue)
    mean.backward()
    assert mean.item() == pytest.approx(sum(per.detach().tolist()) / 5, rel=1e-6)
    assert q.grad is not None and k.grad is None  # keys come from the momentum encoder
    with pytest.raises(ValueError, match="queue"):
        InfoNCELoss()(q, k, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(0.0)

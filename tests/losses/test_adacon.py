"""AdaCon and baseline losses against plain loop implementations of the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_contrastive.losses import (
    ECDF,
    AdaptiveMarginContrastiveLoss,
    AdaptiveTripletLoss,
    MultiTaskRegressionLoss,
    NPairLoss,
    SupConLoss,
)


def _batch(n_samples=6, views=3, dim=16, seed=0, dup_label=True):
    g = torch.Generator().manual_seed(seed)
    labels = torch.rand(n_samples, generator=g, dtype=torch.float64)
    if dup_label:
        labels[1] = labels[0]  # two different samples with equal labels are positives too
    ids = torch.arange(n_samples).repeat_interleave(views)
    y = labels.repeat_interleave(views)
    z = F.normalize(torch.randn(n_samples * views, dim, generator=g, dtype=torch.float64), dim=1)
    ecdf = ECDF(torch.rand(50, generator=g, dtype=torch.float64).tolist() + labels.tolist())
    return z, y, ids, ecdf(y).double()


def loop_adacon(z, phi, ids, y, s, margin=True, tolerance=0.0):
    """Eq. 6 written literally: sum over anchors, mean over positives, margin (eq. 4) on negatives only; positives
    share the sample id or have labels within ``tolerance`` (0: equal labels, eq. 1)."""
    n = z.shape[0]
    losses = []
    for i in range(n):
        P = [j for j in range(n) if j != i and (ids[j] == ids[i] or abs(float(y[j]) - float(y[i])) <= tolerance)]
        if not P:
            continue
        den = 0.0
        for a in range(n):
            if a == i:
                continue
            cos = float(z[i] @ z[a])
            d = 0.0 if (a in P or not margin) else 2.0 * abs(float(phi[i]) - float(phi[a]))
            den += math.exp(s * (cos + d))
        li = 0.0
        for p in P:
            li += -math.log(math.exp(s * float(z[i] @ z[p])) / den)
        losses.append(li / len(P))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("s", [1.0, 10.0, 150.0])
def test_adacon_matches_loop(s):
    z, y, ids, phi = _batch()
    loss = AdaptiveMarginContrastiveLoss(scale=s)(z, phi, ids, y)
    assert loss.item() == pytest.approx(loop_adacon(z, phi, ids, y, s), rel=1e-6)


def test_margin_off_matches_loop_supcon_and_pml():
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    z, y, ids, phi = _batch(dup_label=False)
    ours = AdaptiveMarginContrastiveLoss(scale=10.0, margin=False)(z, phi, ids, y)
    assert ours.item() == pytest.approx(loop_adacon(z, phi, ids, y, 10.0, margin=False), rel=1e-6)
    sup = SupConLoss(temperature=0.1)(z, phi, ids, y)
    assert sup.item() == pytest.approx(ours.item(), rel=1e-6)
    # peer implementation: class labels = sample ids (each unique label a class)
    peer = pml.SupConLoss(temperature=0.1)(z.float(), ids)
    assert ours.item() == pytest.approx(peer.item(), rel=1e-4)


def test_margin_makes_loss_larger_and_grows_with_label_distance():
    z, y, ids, phi = _batch()
    with_m = AdaptiveMarginContrastiveLoss(scale=10.0)(z, phi, ids, y)
    without = AdaptiveMarginContrastiveLoss(scale=10.0, margin=False)(z, phi, ids, y)
    assert with_m > without


def test_gradient_matches_loop_autograd():
    z, y, ids, phi = _batch(n_samples=4, views=2, dim=8)
    z1 = z.clone().requires_grad_(True)
    AdaptiveMarginContrastiveLoss(scale=5.0)(z1, phi, ids, y).backward()
    # autograd through a loop version built from torch ops
    z2 = z.clone().requires_grad_(True)
    n = z2.shape[0]
    terms = []
    for i in range(n):
        P = [j for j in range(n) if j != i and (ids[j] == ids[i] or y[j] == y[i])]
        den = sum(
            torch.exp(5.0 * (z2[i] @ z2[a] + (0.0 if a in P else 2 * abs(float(phi[i] - phi[a])))))
            for a in range(n)
            if a != i
        )
        terms.append(sum(-torch.log(torch.exp(5.0 * (z2[i] @ z2[p])) / den) for p in P) / len(P))
    (sum(terms) / len(terms)).backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-6, atol=1e-9)


def test_anchor_without_positive_contributes_nothing_and_no_nan():
    # seeded: for some draws the positive pair dominates by so much at s = 150 that its float32 loss rounds to 0
    z = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=1).requires_grad_(True)
    y = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.4])  # only the last two are positives of each other
    phi = ECDF(y.tolist())(y)
    loss_fn = AdaptiveMarginContrastiveLoss(scale=150.0, reduction="none")
    per = loss_fn(z, phi, None, y)
    assert torch.all(per[:3] == 0) and torch.all(per[3:] > 0)
    # no positive at all: exactly 0, finite gradient
    y2 = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    loss = AdaptiveMarginContrastiveLoss(scale=150.0)(z, ECDF(y2.tolist())(y2), None, y2)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_finite_at_s150_in_half_precision(dtype):
    z, y, ids, phi = _batch(n_samples=16, views=4, dim=128)
    zh = z.to(dtype).requires_grad_(True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.autocast(device_type=device, dtype=dtype, enabled=device == "cuda" or dtype == torch.bfloat16):
        loss = AdaptiveMarginContrastiveLoss(scale=150.0)(zh.to(device), phi.to(device), ids.to(device), y.to(device))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zh.grad).all()
    ref = loop_adacon(z.to(dtype).double(), phi, ids, y, 150.0)
    assert loss.item() == pytest.approx(ref, rel=1e-3)


def test_tolerance_defines_positives():
    """Labels within ``tolerance`` become positives (no margin, in the numerator): the loss follows the loop with the
    same tolerance, differs from tolerance 0, and a tolerance wider than the label range makes every pair positive."""
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0.10, 0.13, 0.40, 0.45, 0.90], dtype=torch.float64)  # neighbours 0.03 and 0.05 apart
    ids = torch.arange(5).repeat_interleave(2)
    y = labels.repeat_interleave(2)
    z = F.normalize(torch.randn(10, 8, generator=g, dtype=torch.float64), dim=1)
    phi = ECDF(labels.tolist())(y).double()
    losses = {}
    for tol in (0.0, 0.04, 0.06, 10.0):
        loss = AdaptiveMarginContrastiveLoss(scale=10.0, tolerance=tol)(z, phi, ids, y)
        assert loss.item() == pytest.approx(loop_adacon(z, phi, ids, y, 10.0, tolerance=tol), rel=1e-9), tol
        losses[tol] = loss.item()
    # each wider tolerance adds positives (0.04: 0.10~0.13; 0.06: also 0.40~0.45), so the loss changes each time
    assert len({round(v, 9) for v in losses.values()}) == 4
    # everything positive: no margin anywhere, i.e. SupCon with every other sample a positive
    all_pos = AdaptiveMarginContrastiveLoss(scale=10.0, margin=False)(z, phi, torch.zeros(10, dtype=torch.long))
    assert losses[10.0] == pytest.approx(all_pos.item(), rel=1e-9)


def loop_npair(z, ids, y, s):
    n = z.shape[0]
    out = []
    for i in range(n):
        P = [j for j in range(n) if j != i and (ids[j] == ids[i] or y[j] == y[i])]
        Q = [j for j in range(n) if j != i and j not in P]
        if not P:
            continue
        li = 0.0
        for p in P:
            li += math.log(1 + sum(math.exp(s * (float(z[i] @ z[q]) - float(z[i] @ z[p]))) for q in Q))
        out.append(li / len(P))
    return sum(out) / len(out)


def test_npair_matches_loop():
    z, y, ids, phi = _batch()
    assert NPairLoss(scale=5.0)(z, phi, ids, y).item() == pytest.approx(loop_npair(z, ids, y, 5.0), rel=1e-6)


def loop_triplet(z, phi, ids, y, k):
    n = z.shape[0]
    vals = []
    for a in range(n):
        for p in range(n):
            if p == a or not (ids[p] == ids[a] or y[p] == y[a]):
                continue
            for q in range(n):
                if q == a or ids[q] == ids[a] or y[q] == y[a]:
                    continue
                dap = float(((z[a] - z[p]) ** 2).sum())
                daq = float(((z[a] - z[q]) ** 2).sum())
                v = max(0.0, dap - daq + k * abs(float(phi[a] - phi[q])))
                if v > 0:
                    vals.append(v)
    return sum(vals) / len(vals)


def test_adaptive_triplet_matches_loop():
    z, y, ids, phi = _batch()
    ours = AdaptiveTripletLoss(margin_scale=4.0)(z, phi, ids, y)
    assert ours.item() == pytest.approx(loop_triplet(z, phi, ids, y, 4.0), rel=1e-6)


def test_multitask_eq8_and_two_stage_switches():
    z, y, ids, phi = _batch()
    ecdf = ECDF(y.tolist())
    pred = torch.randn(z.shape[0], 1, dtype=torch.float64)
    outputs = {"pred": pred, "embedding": z}
    batch = {"label": y, "sample_id": ids, "view": torch.arange(3).repeat(6)}
    con = AdaptiveMarginContrastiveLoss(scale=150.0)
    total, terms = MultiTaskRegressionLoss("l1", con, ecdf, gamma_con=0.005)(outputs, batch)
    expect = F.l1_loss(pred.reshape(-1).float(), y.float()) + 0.005 * con(z, ecdf(y), ids, y)
    assert total.item() == pytest.approx(expect.item(), rel=1e-5)
    assert set(terms) == {"loss_reg", "loss_con"}
    t_reg, terms_reg = MultiTaskRegressionLoss("mse", con, ecdf, gamma_con=0.0)(outputs, batch)
    assert set(terms_reg) == {"loss_reg"}
    t_con, terms_con = MultiTaskRegressionLoss("l1", con, ecdf, gamma_reg=0.0)(outputs, batch)
    assert set(terms_con) == {"loss_con"}
    # "first": only view 0 supervises the regression head (authors' LVEF code)
    _, tf = MultiTaskRegressionLoss("mse", None, None, regression_views="first")(outputs, batch)
    keep = batch["view"] == 0
    assert tf["loss_reg"].item() == pytest.approx(F.mse_loss(pred.reshape(-1)[keep].float(), y[keep].float()).item())
    with pytest.raises(ValueError, match="ECDF"):
        MultiTaskRegressionLoss("l1", con, None)
    with pytest.raises(KeyError, match="label"):
        MultiTaskRegressionLoss("l1", None, None)(outputs, {"x": y})


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="embeddings must be"):
        AdaptiveMarginContrastiveLoss()(torch.randn(4), torch.rand(4))
    with pytest.raises(ValueError, match="does not match"):
        AdaptiveMarginContrastiveLoss()(torch.randn(4, 3), torch.rand(5))


def test_labels_none_warns_loudly():
    """Without labels, positives are "equal ECDF value": two different labels in one ECDF step become positives."""
    z, y, ids, phi = _batch()
    for loss in (AdaptiveMarginContrastiveLoss(), SupConLoss(), NPairLoss(), AdaptiveTripletLoss()):
        with pytest.warns(UserWarning, match="no labels given"):
            loss(z, phi, ids)


def test_single_anchor_reduction_none_is_zero_not_nan():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(1, 4, generator=g).requires_grad_(True), dim=1)
    phi, y = torch.tensor([0.5]), torch.tensor([1.0])
    for loss in (AdaptiveMarginContrastiveLoss(reduction="none"), NPairLoss(reduction="none")):
        out = loss(z, phi, None, y)
        assert out.shape == (1,) and torch.equal(out.detach(), torch.zeros(1)), type(loss).__name__
    out = AdaptiveMarginContrastiveLoss(reduction="none")(z, phi, None, y)
    out.sum().backward()
    # two samples, no positive: zeros too, and a finite gradient
    z2 = torch.randn(2, 4, generator=g).requires_grad_(True)
    phi2, y2 = torch.tensor([0.3, 0.8]), torch.tensor([0.5, 1.5])
    out = AdaptiveMarginContrastiveLoss(reduction="none")(F.normalize(z2, dim=1), phi2, None, y2)
    out.sum().backward()
    assert torch.equal(out.detach(), torch.zeros(2)) and torch.isfinite(z2.grad).all()


def test_cpu_autocast_computes_in_float32():
    from monai_contrastive.losses.adacon import _fp32

    a = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ a.t()).dtype == torch.bfloat16
        with _fp32():
            assert (a @ a.t()).dtype == torch.float32
    z, y, ids, phi = _batch(dim=64)
    z = z.float().requires_grad_(True)
    ref = AdaptiveMarginContrastiveLoss()(z, phi.float(), ids, y.float())
    (g_ref,) = torch.autograd.grad(ref, z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = AdaptiveMarginContrastiveLoss()(z, phi.float(), ids, y.float())
    (g,) = torch.autograd.grad(out, z)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", [NPairLoss, AdaptiveTripletLoss])
def test_npair_and_triplet_honour_reduction(cls):
    z, y, ids, phi = _batch()
    mean = cls(reduction="mean")(z, phi, ids, y)
    none = cls(reduction="none")(z, phi, ids, y)
    total = cls(reduction="sum")(z, phi, ids, y)
    assert none.shape == (z.shape[0],) and (none >= 0).all()
    if cls is NPairLoss:
        valid = none > 0
        assert total.item() == pytest.approx(none.sum().item(), rel=1e-6)
        assert mean.item() == pytest.approx(none[valid].mean().item(), rel=1e-6)
    else:
        assert mean.item() == pytest.approx(loop_triplet(z, phi, ids, y, 4.0), rel=1e-6)
        assert total.item() > mean.item()
    with pytest.raises(ValueError, match="reduction"):
        cls(reduction="max")


def _plain_autograd_adacon(z, phi, ids, y, s, margin_scale=2.0, tolerance=0.0):
    """The loss as plain vectorised autograd ops (masks as bool, logsumexp): the reference for the hand-written
    backward of the package's implementation."""
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    pos = ((y[:, None] - y[None, :]).abs() <= tolerance) | (ids[:, None] == ids[None, :])
    pos = pos & ~eye
    cos = z @ z.t()
    logits = s * cos + s * margin_scale * (phi[:, None] - phi[None, :]).abs().masked_fill(pos, 0.0)
    log_denom = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)
    log_prob = s * cos - log_denom[:, None]
    n_pos = pos.sum(1)
    per_anchor = -torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1) / n_pos.clamp(min=1)
    return per_anchor, n_pos > 0


@pytest.mark.parametrize(
    "case", ["views_share_labels", "ids_with_different_labels", "tolerance", "no_margin", "scale_150"]
)
def test_hand_written_backward_matches_autograd_and_gradcheck(case):
    """Values and gradients of the custom autograd Function against autograd of the plain expression, in float64,
    for both reductions; gradcheck (finite differences) on top."""
    z, y, ids, phi = _batch(n_samples=5, views=3, dim=8, seed=3)
    s, margin, tol = 5.0, True, 0.0
    if case == "ids_with_different_labels":
        y = y.clone()
        y[1] = y[1] + 0.05  # views of sample 0 no longer share one label: the id mask adds positives
        phi = ECDF(y.tolist())(y).double()
    elif case == "tolerance":
        tol = 0.2
    elif case == "scale_150":
        s = 150.0
    margin = case != "no_margin"
    loss_fn = AdaptiveMarginContrastiveLoss(scale=s, margin=margin, tolerance=tol, reduction="none")
    z1 = z.clone().requires_grad_(True)
    z2 = z.clone().requires_grad_(True)
    weights = torch.linspace(0.5, 2.0, z.shape[0], dtype=torch.float64)
    ours = loss_fn(z1, phi, ids, y)
    ref, valid = _plain_autograd_adacon(z2, phi, ids, y, s, margin_scale=2.0 if margin else 0.0, tolerance=tol)
    ref = torch.where(valid, ref, torch.zeros_like(ref))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-9, atol=1e-12)
    mean_fn = AdaptiveMarginContrastiveLoss(scale=s, margin=margin, tolerance=tol)
    assert mean_fn(z, phi, ids, y).item() == pytest.approx(ref[valid].mean().item(), rel=1e-10)
    if s <= 10.0:  # finite differences are meaningless when s * cos spans hundreds
        zg = z.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda e: mean_fn(e, phi, ids, y), (zg,), eps=1e-6, atol=1e-7)


def test_tiny_softmax_terms_do_not_change_the_loss_at_scale_150():
    """Terms below e^-60 of a row's largest are raised to e^-60 (speed); at s = 150 most negatives are that small."""
    z, y, ids, phi = _batch(n_samples=32, views=4, dim=16, seed=1)
    per, valid = _plain_autograd_adacon(z, phi, ids, y, 150.0)
    ours = AdaptiveMarginContrastiveLoss(scale=150.0, reduction="none")(z, phi, ids, y)
    torch.testing.assert_close(ours, torch.where(valid, per, torch.zeros_like(per)), rtol=1e-12, atol=1e-12)


def test_backward_inside_cpu_autocast_stays_float32():
    """The hand-written backward leaves autocast too: a backward called inside a bf16 region gives the fp32 gradient."""
    z, y, ids, phi = _batch(dim=64)
    z = z.float().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(AdaptiveMarginContrastiveLoss()(z, phi.float(), ids, y.float()), z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (g,) = torch.autograd.grad(AdaptiveMarginContrastiveLoss()(z, phi.float(), ids, y.float()), z)
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7)

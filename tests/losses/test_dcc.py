"""DCC contrastive loss (DCC-CL eq. 1-4) against plain loops of the equations and a peer library's NT-Xent."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_contrastive.losses import (
    DynamicContrastCorrelationLoss,
    attention_mean_intensity,
    contrast_correlation_weights,
    dcc_pretraining_loss,
)


def _views(n: int = 5, d: int = 16, hw: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(2 * n, d, generator=g, dtype=torch.float64), dim=1)
    image = torch.rand(2 * n, 1, hw, hw, generator=g, dtype=torch.float64)
    attention = (torch.rand(2 * n, 1, hw, hw, generator=g) > 0.6).double()
    return z, torch.cat([image, attention], 1)


def _loop_d(x: torch.Tensor) -> list[float | None]:
    """eq. 1, pixel by pixel: d_i = sum over phi of x * s / |phi|; None for an empty region."""
    out = []
    for i in range(x.shape[0]):
        total, count = 0.0, 0
        for r in range(x.shape[2]):
            for c in range(x.shape[3]):
                if x[i, 1, r, c] > 0.5:
                    total += float(x[i, 0, r, c] * x[i, 1, r, c])
                    count += 1
        out.append(total / count if count else None)
    return out


def _loop_weights(d: list[float | None]) -> list[list[float]]:
    """eq. 2, 1 - v_ij, pair by pair; a pair with an empty region has weight 1."""
    return [[1.0 if a is None or b is None else 1.0 - abs(a - b) for b in d] for a in d]


def _loop_eq4(z: torch.Tensor, w: list[list[float]], t: float) -> float:
    """eq. 4 written out: positive p(k) = the other view (k + n mod 2n), J(k) = every j != k; mean over k."""
    two_n = z.shape[0]
    n = two_n // 2
    total = 0.0
    for k in range(two_n):
        p = (k + n) % two_n
        num = math.exp(float(z[k] @ z[p]) * w[k][p] / t)
        den = sum(math.exp(float(z[k] @ z[j]) * w[k][j] / t) for j in range(two_n) if j != k)
        total += -math.log(num / den)
    return total / two_n


def _loop_denominator(z: torch.Tensor, w: list[list[float]], t: float, base_t: float) -> float:
    """The published code's variant: unweighted numerator, each denominator exp times w_kj, scaled by t / base_t."""
    two_n = z.shape[0]
    n = two_n // 2
    total = 0.0
    for k in range(two_n):
        p = (k + n) % two_n
        num = math.exp(float(z[k] @ z[p]) / t)
        den = sum(w[k][j] * math.exp(float(z[k] @ z[j]) / t) for j in range(two_n) if j != k)
        total += -(t / base_t) * math.log(num / den)
    return total / two_n


def test_intensity_and_weights_match_loops():
    _, x = _views()
    d, valid = attention_mean_intensity(x[:, :1], x[:, 1:])
    ref = _loop_d(x)
    for i, r in enumerate(ref):
        assert bool(valid[i]) == (r is not None)
        if r is not None:
            assert float(d[i]) == pytest.approx(r, abs=1e-12)
    w = contrast_correlation_weights(d, valid)
    assert torch.allclose(w, torch.tensor(_loop_weights(ref), dtype=w.dtype), atol=1e-12)


def test_intensity_over_several_image_channels_matches_loop():
    """eq. 1 sums over the channels too: |phi| counts pixels x channels (the batched-product path)."""
    g = torch.Generator().manual_seed(4)
    image = torch.rand(3, 2, 6, 6, generator=g, dtype=torch.float64)
    attention = (torch.rand(3, 1, 6, 6, generator=g) > 0.5).double()
    attention[1] = 0.0
    d, valid = attention_mean_intensity(image, attention)
    for i in range(3):
        m = attention[i, 0] > 0.5
        if not bool(m.any()):
            assert not bool(valid[i]) and float(d[i]) == 0.0
            continue
        vals = [float(image[i, c, r, q]) for c in range(2) for r in range(6) for q in range(6) if m[r, q]]
        assert bool(valid[i]) and float(d[i]) == pytest.approx(sum(vals) / len(vals), abs=1e-12)


def test_empty_attention_map_gives_unit_weights():
    _, x = _views(n=3)
    x[2, 1] = 0.0  # view 2 lost its organ (cropped out)
    d, valid = attention_mean_intensity(x[:, :1], x[:, 1:])
    assert not bool(valid[2]) and bool(valid[[0, 1, 3, 4, 5]].all())
    assert float(d[2]) == 0.0 and torch.isfinite(d).all()
    w = contrast_correlation_weights(d, valid)
    assert torch.equal(w[2], torch.ones(6, dtype=w.dtype)) and torch.equal(w[:, 2], torch.ones(6, dtype=w.dtype))
    assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0
    other = w[[0, 1, 3, 4, 5]][:, [0, 1, 3, 4, 5]]
    assert float(other.min()) < 1.0  # the valid views are still weighted
    loss = DynamicContrastCorrelationLoss(gather_distributed=False)(F.normalize(torch.randn(6, 8), dim=1), x.float())
    assert torch.isfinite(loss)


def test_weights_clamped_to_unit_interval():
    d = torch.tensor([-1.0, 0.2, 2.5])  # an unnormalised input would give 1 - |d_i - d_j| < 0
    w = contrast_correlation_weights(d)
    assert float(w.min()) == 0.0 and float(w.max()) == 1.0


@pytest.mark.parametrize("t", [0.07, 0.3])
def test_eq4_matches_loop(t):
    z, x = _views(n=6)
    x[3, 1] = 0.0
    loss = DynamicContrastCorrelationLoss(temperature=t, gather_distributed=False)(z, x)
    ref = _loop_eq4(z, _loop_weights(_loop_d(x)), t)
    assert float(loss) == pytest.approx(ref, rel=1e-10)


def test_denominator_mode_matches_published_code_loop():
    z, x = _views(n=4, seed=3)
    loss = DynamicContrastCorrelationLoss(temperature=0.3, weighting="denominator", gather_distributed=False)(z, x)
    ref = _loop_denominator(z, _loop_weights(_loop_d(x)), 0.3, 0.07)
    assert float(loss) == pytest.approx(ref, rel=1e-10)


def test_sample_id_defines_positive_and_order_is_free():
    z, x = _views(n=4, seed=5)
    loss_fn = DynamicContrastCorrelationLoss(gather_distributed=False)
    ids = torch.arange(8) % 4
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    a = loss_fn(z, x, ids)
    b = loss_fn(z[perm], x[perm], ids[perm])
    assert float(a) == pytest.approx(float(b), rel=1e-10)
    # with other pairs as positives the value changes
    assert float(loss_fn(z, x, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))) != pytest.approx(float(a), rel=1e-6)


def test_groups_other_than_pairs_match_loop():
    """Three views of one sample and a view without its partner (the general path, not the two-view sort): each
    anchor's term averages the log-ratio over its positives; an anchor without a positive contributes nothing."""
    z, x = _views(n=4, seed=7)
    ids = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    t = 0.07
    w = _loop_weights(_loop_d(x))
    terms = []
    for k in range(8):
        positives = [j for j in range(8) if j != k and ids[j] == ids[k]]
        if not positives:
            continue
        den = sum(math.exp(float(z[k] @ z[j]) * w[k][j] / t) for j in range(8) if j != k)
        terms.append(sum(math.log(den) - float(z[k] @ z[p]) * w[k][p] / t for p in positives) / len(positives))
    loss = DynamicContrastCorrelationLoss(temperature=t, gather_distributed=False)(z, x, ids)
    assert float(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-10)
    per_anchor = DynamicContrastCorrelationLoss(temperature=t, gather_distributed=False, reduction="none")(z, x, ids)
    assert float(per_anchor[5]) == 0.0 and bool((per_anchor[[0, 1, 2, 3, 4, 6, 7]] != 0).all())


@pytest.mark.parametrize("weighting", ["eq4", "denominator", "none"])
def test_gradient_of_the_in_place_computation_matches_finite_differences(weighting):
    """The logits are scaled and their diagonal filled in place: autograd's gradient must still be the true one."""
    z, x = _views(n=3, d=5, seed=11)
    z = z.clone().requires_grad_(True)
    loss_fn = DynamicContrastCorrelationLoss(temperature=0.3, weighting=weighting, gather_distributed=False)
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, x), (z,), eps=1e-6, atol=1e-6)


def test_unit_weights_equal_ntxent_of_pytorch_metric_learning():
    from pytorch_metric_learning.losses import NTXentLoss

    z, x = _views(n=7, seed=2)
    x[:, 0] = 0.5  # every view has the same mean intensity: v = 0, every weight 1
    labels = torch.arange(14) % 7
    ref = NTXentLoss(temperature=0.07)(z.float(), labels)
    ours = DynamicContrastCorrelationLoss(gather_distributed=False)(z.float(), x.float(), labels)
    simclr = DynamicContrastCorrelationLoss(weighting="none", gather_distributed=False)(z.float(), None, labels)
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)
    assert float(simclr) == pytest.approx(float(ref), rel=1e-5)
    # different intensities make DCC differ from NT-Xent
    _, x2 = _views(n=7, seed=2)
    assert float(DynamicContrastCorrelationLoss(gather_distributed=False)(z.float(), x2.float(), labels)) != (
        pytest.approx(float(ref), rel=1e-3)
    )


def test_gradient_flows_to_embeddings_not_weights_and_is_finite_under_fp16_inputs():
    z, x = _views(n=4)
    z = z.float().requires_grad_(True)
    img = x.float().requires_grad_(True)
    loss = DynamicContrastCorrelationLoss(gather_distributed=False)(z, img)
    loss.backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    assert img.grad is None  # the weights are data, not a path for the gradient
    half = DynamicContrastCorrelationLoss(gather_distributed=False)(z.detach().half(), x.half())
    assert torch.isfinite(half) and half.dtype == torch.float32


def test_reduction_and_errors():
    z, x = _views(n=3)
    per = DynamicContrastCorrelationLoss(reduction="none", gather_distributed=False)(z, x)
    assert per.shape == (6,)
    mean = DynamicContrastCorrelationLoss(gather_distributed=False)(z, x)
    assert float(per.mean()) == pytest.approx(float(mean), rel=1e-12)
    with pytest.raises(ValueError, match="weighting"):
        DynamicContrastCorrelationLoss(weighting="both")
    with pytest.raises(ValueError, match="attention channel"):
        DynamicContrastCorrelationLoss(gather_distributed=False)(z, x[:, :1])
    with pytest.raises(ValueError, match="input is needed"):
        DynamicContrastCorrelationLoss(gather_distributed=False)(z, None)


def test_pretraining_objectives_by_method():
    g = torch.Generator().manual_seed(0)
    n = 4
    z = F.normalize(torch.randn(2 * n, 8, generator=g), dim=1)
    _, x = _views(n=n)
    batch = {
        "image": x.float(),
        "sample_id": torch.arange(2 * n) % n,
        "organ": torch.tensor([1, 2, 1, 3] * 2),
        "phase": torch.tensor([0, 0, 1, 1] * 2),
        "organ_phase": torch.tensor([4, 8, 5, 13] * 2),
    }
    outputs = {"embedding": z, "organ_logits": torch.randn(2 * n, 4, generator=g), "phase_logits": torch.randn(8, 4)}
    for method, term in [("simclr", "simclr"), ("dcc", "dcc"), ("agcl", "agcl"), ("ce", "organ_ce")]:
        total, terms = dcc_pretraining_loss(method, gather_distributed=False)(outputs, batch)
        assert term in terms and torch.isfinite(total)
    with pytest.raises(ValueError, match="none"):
        dcc_pretraining_loss("none")
    with pytest.raises(ValueError, match="pretrain_method"):
        dcc_pretraining_loss("moco")

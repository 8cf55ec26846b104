"""CLEF's losses (Kuleshov et al., FLARE 2022, §2.2) against plain loops of their equations, the random affine and the
one warp shared by image and features."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_contrastive.losses import (
    DecodingLoss,
    DiscriminativenessLoss,
    EquivarianceLoss,
    MultiTermLoss,
    OrganDiceCELoss,
)
from monai_contrastive.losses.clef import organ_one_hot, sample_body_voxels
from monai_contrastive.networks import CLEFNet, affine_warp
from monai_contrastive.transforms.ct import RandCLEFAffine, RandCLEFAffined


def _unflatten(i, spatial):
    coords = []
    for size in reversed(spatial):
        coords.append(i % size)
        i //= size
    return coords[::-1]


def _loop_discriminativeness(features, spacing, anchors, leaves, min_mm=10.0, margin=-0.9, reduction="mean"):
    """Eq. 1 one anchor and one leaf at a time: D = -<f_a, f_l> of unit features, F(a) by the mm distance,
    sum relu(M - D); per sample (divided by |pairs| for "mean"), then the mean over samples with a far pair."""
    b, c, *spatial = features.shape
    values = []
    for s in range(b):
        total, n = 0.0, 0
        for a in anchors[s].tolist():
            fa = features[s].reshape(c, -1)[:, a].double()
            fa = fa / fa.norm()
            ca = _unflatten(a, spatial)
            for l_ in leaves[s].tolist():
                cl = _unflatten(l_, spatial)
                dist = math.sqrt(sum(((ca[k] - cl[k]) * float(spacing[s][k])) ** 2 for k in range(3)))
                if dist < min_mm:
                    continue
                fl = features[s].reshape(c, -1)[:, l_].double()
                fl = fl / fl.norm()
                d = -float(fa @ fl)
                total += max(margin - d, 0.0)
                n += 1
        if n:
            values.append(total / n if reduction == "mean" else total)
    return sum(values) / len(values)


def _loop_equivariance(warped, of_warped, valid):
    """Eq. 2: -<T(f(X)), f(T(X))> of unit vectors, averaged over each sample's valid voxels, then over samples."""
    b, c = warped.shape[:2]
    values = []
    for s in range(b):
        w, o, v = warped[s].reshape(c, -1).double(), of_warped[s].reshape(c, -1).double(), valid[s].reshape(-1)
        total, n = 0.0, 0
        for i in range(w.shape[1]):
            if v[i] > 0.5:
                total += -float((w[:, i] / w[:, i].norm()) @ (o[:, i] / o[:, i].norm()))
                n += 1
        if n:
            values.append(total / n)
    return sum(values) / len(values)


def test_decoding_loss_is_the_mean_squared_error_of_the_equation():
    g = torch.Generator().manual_seed(0)
    dec, x = torch.randn(2, 1, 4, 5, 3, generator=g), torch.randn(2, 1, 4, 5, 3, generator=g)
    want = sum(float(d - t) ** 2 for d, t in zip(dec.flatten(), x.flatten())) / x.numel()
    assert float(DecodingLoss()(dec, x)) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        DecodingLoss()(dec, x[:, :, :2])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_discriminativeness_equals_the_loop_with_anisotropic_spacing(reduction):
    g = torch.Generator().manual_seed(1)
    b, c, spatial = 2, 5, (6, 7, 8)
    features = torch.randn(b, c, *spatial, generator=g)
    features[:, :, :3] += 3.0  # correlated features, so that many pairs are above the margin
    spacing = torch.tensor([[0.8, 0.8, 5.0], [2.5, 1.0, 0.7]])  # anisotropic, different per sample
    n = math.prod(spatial)
    anchors = torch.randint(0, n, (b, 7), generator=g)
    leaves = torch.randint(0, n, (b, 40), generator=g)
    loss = DiscriminativenessLoss(reduction=reduction)
    got, extra = loss.pair_loss(features, spacing, anchors, leaves)
    want = _loop_discriminativeness(features, spacing, anchors, leaves, reduction=reduction)
    assert float(got) == pytest.approx(want, rel=1e-5)
    # the mm mask matters: with isotropic 1 mm spacing (distances in voxels < 10 mm here) no pair is far
    none, extra_iso = loss.pair_loss(features, torch.ones(b, 3), anchors, leaves)
    assert float(extra_iso["far_pairs"]) == 0 and float(none) == 0.0
    assert float(extra["far_pairs"]) > 0


def test_discriminativeness_samples_inside_the_body_and_handles_an_empty_body():
    g = torch.Generator().manual_seed(2)
    body = torch.zeros(2, 1, 6, 6, 6, dtype=torch.uint8)
    body[0, 0, 1:3, 2:4, 0:5] = 1
    index, has_body = sample_body_voxels(body.reshape(2, -1) > 0, 500, g)
    assert has_body.tolist() == [True, False]
    assert bool(body.reshape(2, -1)[0][index[0]].all())
    # a sample without body voxels contributes nothing; a batch without any gives 0, not NaN, with a gradient path
    features = torch.randn(2, 4, 6, 6, 6, requires_grad=True)
    loss = DiscriminativenessLoss(num_anchors=8, num_leaves=16, generator=g)
    value, _ = loss(features[1:], body[1:], torch.full((1, 3), 20.0))
    assert float(value) == 0.0 and value.requires_grad
    value, extra = loss(features, body, torch.full((2, 3), 20.0))
    assert torch.isfinite(value) and float(extra["far_pairs"]) > 0


def test_discriminativeness_penalises_collapsed_features_by_one_plus_margin():
    """All features equal: <f_a, f_l> = 1 for every far pair, relu(M - D) = relu(-0.9 + 1) = 0.1; orthogonal: 0."""
    same = torch.ones(1, 3, 8, 8, 8)
    body = torch.ones(1, 1, 8, 8, 8)
    value, _ = DiscriminativenessLoss(num_anchors=4, num_leaves=64)(same, body, torch.full((1, 3), 4.0))
    assert float(value) == pytest.approx(0.1, abs=1e-6)


def test_equivariance_equals_the_loop():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 4, 3, 4, 5, generator=g), torch.randn(2, 4, 3, 4, 5, generator=g)
    valid = (torch.rand(2, 1, 3, 4, 5, generator=g) > 0.3).float()
    got = EquivarianceLoss()(a, b, valid)
    assert float(got) == pytest.approx(_loop_equivariance(a, b, valid), rel=1e-5)
    none = EquivarianceLoss()(a.requires_grad_(), b, torch.zeros_like(valid))
    assert float(none) == 0.0 and none.requires_grad


def _grid_keeping_thetas(size):
    """Shifts by whole voxels and a 90-degree rotation of a cube: sampling points land on voxel centres."""
    step = 2.0 / size
    shift = torch.tensor([[1.0, 0, 0, 2 * step], [0, 1.0, 0, -step], [0, 0, 1.0, 0]])
    rot = torch.tensor([[0.0, -1, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, step]])
    return [shift, rot]


class _Pointwise(torch.nn.Module):
    """A 1x1x1 conv with a non-linearity: equivariant to warps that keep the voxel grid."""

    def __init__(self, positional: bool = False) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 6, 1)
        self.positional = positional

    def forward(self, x):
        y = torch.tanh(self.conv(x))
        if self.positional:  # a feature that depends on where the voxel is: not equivariant
            ramp = torch.linspace(-1, 1, x.shape[-1], device=x.device)
            y = y + 2.0 * ramp.expand_as(y)
        return y


@pytest.mark.parametrize("which", [0, 1])
def test_equivariance_is_minimal_for_an_equivariant_net_and_larger_otherwise(which):
    torch.manual_seed(0)
    size = 8
    x = torch.randn(1, 1, size, size, size)
    theta = _grid_keeping_thetas(size)[which][None]
    loss = EquivarianceLoss()
    values = {}
    for positional in (False, True):
        f = _Pointwise(positional)
        warped_features, valid = affine_warp(f(x), theta)
        features_of_warped = f(affine_warp(x, theta)[0])
        assert valid.sum() > 0
        values[positional] = float(loss(warped_features, features_of_warped, valid))
    assert values[False] == pytest.approx(-1.0, abs=1e-5)
    assert values[True] > -1.0 + 1e-2


def _linear_pointwise_clef(width=4):
    """A CLEFNet whose backbone and heads are linear 1x1x1 convs: f commutes with any interpolating warp inside the
    volume, so the model's own equivariance outputs give L_e = -1 exactly when image and features share the grid."""
    net = CLEFNet(feature_channels=5, features=(4, 4, 4, 4, 4, width))
    net.backbone = torch.nn.Conv3d(1, width, 1)
    net.feature_head = torch.nn.Conv3d(width, 5, 1)
    return net


def test_the_model_warps_image_and_features_on_one_grid():
    torch.manual_seed(1)
    net = _linear_pointwise_clef()
    x = torch.randn(2, 1, 10, 10, 10)
    t = RandCLEFAffine().set_random_state(5)
    theta = torch.stack([t(spatial_dims=3), t(spatial_dims=3)])
    out = net(x, theta=theta)
    assert set(out) == {"embedding", "decoded", "embedding_of_warped", "warped_embedding", "warp_valid"}
    loss = EquivarianceLoss()
    assert float(loss(out["warped_embedding"], out["embedding_of_warped"], out["warp_valid"])) == pytest.approx(
        -1.0, abs=1e-5
    )
    # had the features been warped on another grid (here: the next draw's), L_e would be far from its minimum
    other = torch.stack([t(spatial_dims=3), t(spatial_dims=3)])
    moved, _ = affine_warp(out["embedding"], other)
    assert float(loss(moved, out["embedding_of_warped"], out["warp_valid"])) > -0.95


def test_rand_clef_affine_draws_the_paper_ranges_in_two_axes_and_is_seedable():
    t = RandCLEFAffine().set_random_state(0)
    seen_planes = set()
    for _ in range(60):
        theta = t(spatial_dims=3).double()
        lin = theta[:, :3]
        moved = [i for i in range(3) if not torch.allclose(lin[i], torch.eye(3, dtype=torch.float64)[i])]
        untouched = [i for i in range(3) if i not in moved]
        assert len(untouched) >= 1 and theta[untouched[0], 3] == 0
        p, q = sorted(set(range(3)) - {untouched[0]})
        seen_planes.add((p, q))
        block = lin[[p, q]][:, [p, q]]
        scale = 1.0 / math.sqrt(float(torch.det(block)))
        angle = math.degrees(math.atan2(float(block[1, 0]), float(block[0, 0])))
        assert 1.0 <= scale <= 1.5 and -30.0 <= angle <= 30.0
        assert float(theta[[p, q], 3].abs().max()) <= 0.1
    assert len(seen_planes) == 3
    a = RandCLEFAffined("image").set_random_state(7)({"image": torch.zeros(1, 4, 4, 4)})["clef_theta"]
    b = RandCLEFAffined("image").set_random_state(7)({"image": torch.zeros(1, 4, 4, 4)})["clef_theta"]
    assert torch.equal(a, b) and a.shape == (3, 4)


def test_the_three_terms_compose_in_a_multi_term_loss():
    torch.manual_seed(2)
    net = CLEFNet(feature_channels=8, features=(4, 4, 8, 8, 16, 4))
    x = torch.randn(1, 1, 32, 32, 32)  # 32: the bottleneck keeps 2^3 voxels for instance norm
    theta = RandCLEFAffine().set_random_state(0)(spatial_dims=3)[None]
    out = net(x, theta=theta)
    batch = {"image": x, "body": torch.ones_like(x), "spacing_mm": torch.tensor([[2.0, 2.0, 3.0]])}
    loss = MultiTermLoss(
        {
            "decoding": {"loss": DecodingLoss(), "inputs": ["decoded", "image"]},
            "discriminativeness": {
                "loss": DiscriminativenessLoss(num_anchors=8, num_leaves=64),
                "inputs": ["embedding", "body", "spacing_mm"],
            },
            "equivariance": {
                "loss": EquivarianceLoss(),
                "inputs": ["warped_embedding", "embedding_of_warped", "warp_valid"],
            },
        }
    )
    total, terms = loss(out, batch)
    assert {"decoding", "discriminativeness", "equivariance", "discriminativeness_far_pairs"} <= set(terms)
    assert -1.0 <= float(terms["equivariance"]) <= 1.0
    total.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_organ_one_hot_has_one_channel_per_organ_and_no_background():
    label = torch.tensor([0, 1, 13, 5]).reshape(1, 1, 4, 1, 1)
    y = organ_one_hot(label, 14)
    assert y.shape == (1, 13, 4, 1, 1)
    assert y[0, :, 0].sum() == 0 and y[0, 0, 1] == 1 and y[0, 12, 2] == 1 and y[0, 4, 3] == 1
    assert torch.equal(y, F.one_hot(label[:, 0].long(), 14).movedim(-1, 1)[:, 1:].float())


def test_organ_dice_ce_is_sigmoid_dice_plus_per_channel_bce():
    from monai.losses import DiceLoss

    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 13, 4, 4, 3, generator=g)
    label = torch.randint(0, 14, (2, 1, 4, 4, 3), generator=g)
    target = organ_one_hot(label, 14)
    want = DiceLoss(sigmoid=True)(logits, target) + F.binary_cross_entropy_with_logits(logits, target)
    got = OrganDiceCELoss(num_classes=14)(logits, label)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    with_background = torch.cat([torch.zeros_like(logits[:, :1]), logits], 1)
    assert float(OrganDiceCELoss(num_classes=14)(with_background, label)) == pytest.approx(float(want), rel=1e-5)
    with pytest.raises(ValueError, match="one per organ"):
        OrganDiceCELoss(num_classes=14)(logits[:, :5], label)

"""LocalRegionContrastLoss against a plain loop over images and regions of the thesis's equation (§3.1.2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_contrastive.losses import LocalRegionContrastLoss, MultiTermLoss, region_means


def _loop_loss(fq, fp, rq, rp, tau, min_size=1, region_reduction="sum"):
    """L_l of §3.1.2 with exact region means, one image and one region at a time; mean over images with a loss."""
    fq, fp = F.normalize(fq.double(), dim=1), F.normalize(fp.double(), dim=1)
    losses = []
    for b in range(fq.shape[0]):
        ids = []
        for k in sorted(set(rq[b].flatten().tolist())):
            if k == 0:
                continue
            nq, np_ = int((rq[b] == k).sum()), int((rp[b] == k).sum())
            if nq >= min_size and np_ >= min_size and np_ > 0:
                ids.append(k)
        if len(ids) < 2:
            continue
        mq = {k: fq[b][:, rq[b, 0] == k].mean(1) for k in ids}
        mp = {k: fp[b][:, rp[b, 0] == k].mean(1) for k in ids}
        total = 0.0
        for k1 in ids:
            num = math.exp(float(mq[k1] @ mp[k1]) / tau)
            den = 0.0
            for k2 in ids:
                if k2 != k1:
                    den += math.exp(float(mq[k1] @ mq[k2]) / tau)
                den += math.exp(float(mq[k1] @ mp[k2]) / tau)
            total += -math.log(num / den)
        losses.append(total / (len(ids) if region_reduction == "mean" else 1))
    return sum(losses) / len(losses)


def _regions(b, h, w, k, generator):
    """Blocky random region maps with ids 0..k (0 = outside the body)."""
    coarse = torch.randint(0, k + 1, (b, 1, h // 4, w // 4), generator=generator)
    return F.interpolate(coarse.float(), size=(h, w), mode="nearest").long()


@pytest.mark.parametrize("region_reduction", ["sum", "mean"])
def test_exact_means_equal_the_loop(region_reduction):
    g = torch.Generator().manual_seed(0)
    b, d, h, w = 3, 6, 16, 16
    fq, fp = torch.randn(b, d, h, w, generator=g), torch.randn(b, d, h, w, generator=g)
    rq = _regions(b, h, w, 7, g)
    rp = rq.clone()
    rp[:, :, :4] = 0  # the warp pushes some regions out of the view: those vanish and are dropped
    tau = 0.07
    loss = LocalRegionContrastLoss(temperature=tau, num_points=None, region_reduction=region_reduction)
    got = loss(fq, rq, fp, rp)
    want = _loop_loss(fq, fp, rq, rp, tau, region_reduction=region_reduction)
    assert got.item() == pytest.approx(want, rel=1e-5)
    # the stacked (view-major) call used by the trainer is the same loss
    assert loss(torch.cat([fq, fp]), torch.cat([rq, rp])).item() == pytest.approx(want, rel=1e-5)
    # regions outside the warped view are counted as vanished
    assert loss.last_counts["vanished"] > 0 and loss.last_counts["images"] == b


def test_min_region_size_and_single_region_images():
    g = torch.Generator().manual_seed(1)
    b, d, h, w = 4, 5, 12, 12
    fq, fp = torch.randn(b, d, h, w, generator=g), torch.randn(b, d, h, w, generator=g)
    rq = _regions(b, h, w, 5, g)
    rq[3] = 0
    rq[3, 0, :6] = 1  # image 3 has one region: no negative, no loss
    rq[0, 0, 0, 0] = 9  # a 1-pixel region
    rp = rq.clone()
    loss = LocalRegionContrastLoss(temperature=0.1, num_points=None, min_region_size=2)
    got = loss(fq, rq, fp, rp)
    assert got.item() == pytest.approx(_loop_loss(fq, fp, rq, rp, 0.1, min_size=2), rel=1e-5)
    assert loss.last_counts["small"] >= 1 and loss.last_counts["images"] == 3


def test_sampling_draws_pixels_of_the_region_uniformly():
    # embedding = one-hot pixel index, so a sampled mean tells exactly which pixels were drawn
    b, h, w = 2, 6, 6
    p = h * w
    emb = torch.eye(p).reshape(p, h, w).unsqueeze(0).repeat(b, 1, 1, 1)  # (B, P, H, W)
    reg = torch.zeros(b, 1, h, w, dtype=torch.long)
    reg[:, 0, :3] = 1
    reg[:, 0, 3:, :2] = 2
    ids = torch.where(reg.reshape(b, -1) > 0, reg.reshape(b, -1) + torch.arange(b)[:, None] * 3 + 1, 0).reshape(-1)
    kept = torch.tensor([1, 2, 4, 5])
    g = torch.Generator().manual_seed(0)
    means = region_means(emb.reshape(b, p, p), ids, kept, num_points=20000, generator=g)
    for row, gid in enumerate(kept.tolist()):
        image, region = divmod(gid, 3)
        inside = (reg[image, 0].reshape(-1) == region).float()
        # all mass on the region's pixels, and close to uniform over them
        assert means[row][inside == 0].abs().max().item() == 0.0
        expected = inside / inside.sum()
        assert (means[row] - expected).abs().max().item() < 0.02
    # N samples converge to the exact means used by the loop test
    exact = region_means(emb.reshape(b, p, p), ids, kept, num_points=None)
    assert torch.allclose(means, exact, atol=0.02)


def test_loss_trains_embeddings_apart_and_is_vectorised_on_autograd():
    g = torch.Generator().manual_seed(2)
    b, d, h, w = 2, 8, 16, 16
    rq = _regions(b, h, w, 6, g)
    f = torch.randn(b, d, h, w, generator=g, requires_grad=True)
    loss_fn = LocalRegionContrastLoss(num_points=32)
    loss_fn.generator = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD([f], lr=1.0)
    first = None
    for _ in range(30):
        opt.zero_grad()
        value = loss_fn(torch.cat([f, f]), torch.cat([rq, rq]))
        value.backward()
        opt.step()
        first = value.item() if first is None else first
    assert value.item() < 0.5 * first
    assert f.grad is not None and torch.isfinite(f.grad).all()


def test_max_regions_caps_each_image_and_counts():
    g = torch.Generator().manual_seed(3)
    b, d, h, w = 2, 4, 32, 32
    rq = torch.arange(64).reshape(1, 1, 8, 8).repeat(b, 1, 1, 1) + 1
    rq = F.interpolate(rq.float(), size=(h, w), mode="nearest").long()
    f = torch.randn(b, d, h, w, generator=g)
    loss = LocalRegionContrastLoss(num_points=4, max_regions=10)
    loss(f, rq, f, rq)
    assert loss.last_counts["regions"] == 20 and loss.last_counts["capped"] == 2 * 64 - 20


def test_no_region_gives_zero_with_gradient_and_a_warning():
    f = torch.randn(2, 3, 8, 8, requires_grad=True)
    r = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    with pytest.warns(UserWarning, match="no image has two regions"):
        value = LocalRegionContrastLoss()(f, r, f, r)
    value.backward()
    assert value.item() == 0.0 and f.grad is not None


def test_bad_input_is_named():
    f = torch.randn(3, 4, 8, 8)
    with pytest.raises(ValueError, match="even number of rows"):
        LocalRegionContrastLoss()(f, torch.ones(3, 1, 8, 8))
    with pytest.raises(ValueError, match="do not match the embeddings"):
        LocalRegionContrastLoss()(f, torch.ones(3, 1, 4, 4), f, torch.ones(3, 1, 4, 4))
    with pytest.raises(ValueError, match="temperature"):
        LocalRegionContrastLoss(temperature=0)


def test_counts_are_logged_through_multiterm():
    g = torch.Generator().manual_seed(4)
    f = torch.randn(4, 4, 16, 16, generator=g)
    r = _regions(2, 16, 16, 5, g)
    loss = MultiTermLoss(
        {"lrc": {"loss": LocalRegionContrastLoss(return_counts=True), "inputs": ["decoder", "regions"]}}
    )
    total, terms = loss({"decoder": f}, {"regions": torch.cat([r, r])})
    assert torch.equal(total, terms["lrc"]) and terms["lrc_images"].item() == 2 and terms["lrc_regions"].item() > 2

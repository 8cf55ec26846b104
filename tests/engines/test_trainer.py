from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandFlipd, RandGaussianNoised

from monai_contrastive.engines import MultiViewTrainer, PrepareViewBatch, loss_terms_output
from monai_contrastive.inferers import SelectOutputInferer
from monai_contrastive.losses import ECDF, AdaptiveMarginContrastiveLoss, MultiTaskRegressionLoss
from monai_contrastive.networks import RegressionContrastiveNet
from monai_contrastive.transforms import RandMultiView, RandMultiViewd

from ..helpers import TinyBackbone


def test_stacked_views_view_major_with_declared_sample_keys():
    b, v = 3, 4
    batch = {
        "image": torch.arange(b * v).reshape(b, v, 1).float(),
        "label": torch.tensor([0.1, 0.2, 0.3]),
        "weight": torch.tensor([5.0, 6.0, 7.0]),  # not declared: kept per sample, not repeated
        "name": ["a", "b", "c"],
    }
    inputs, out, args, kwargs = PrepareViewBatch(stacked_keys=["image"], sample_keys=["label"])(batch, "cpu")
    assert inputs is out["image"] and inputs.shape == (12, 1) and args == () and kwargs == {}
    assert out["sample_id"].tolist() == [0, 1, 2] * 4
    assert out["view"].tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    torch.testing.assert_close(out["label"], torch.tensor([0.1, 0.2, 0.3]).repeat(4))
    # row r is view r // 3 of sample r % 3
    assert [out["image"][r, 0].item() for r in range(12)] == [(r % 3) * 4 + r // 3 for r in range(12)]
    assert out["weight"].tolist() == [5.0, 6.0, 7.0] and out["name"] == ["a", "b", "c"]


def test_views_by_key_carry_their_own_keys():
    batch = {
        "image": torch.zeros(2, 1, 3),
        "image_2": torch.ones(2, 1, 3),
        "regions": torch.full((2, 3), 7),
        "regions_2": torch.full((2, 3), 9),
        "label": torch.tensor([1.0, 2.0]),
    }
    views = [{"image": "image", "regions": "regions"}, {"image": "image_2", "regions": "regions_2"}]
    prep = PrepareViewBatch(views=views, sample_keys=["label"], network_kwargs={"view": "view"})
    inputs, out, _, kwargs = prep(batch, "cpu")
    assert inputs.shape == (4, 1, 3) and inputs[2:].eq(1).all() and inputs[:2].eq(0).all()
    assert out["regions"][:2].eq(7).all() and out["regions"][2:].eq(9).all(), "view 2 rows must get regions_2"
    assert "image_2" not in out and "regions_2" not in out
    assert out["sample_id"].tolist() == [0, 1, 0, 1] and out["view"].tolist() == [0, 0, 1, 1]
    assert out["label"].tolist() == [1.0, 2.0, 1.0, 2.0]
    assert kwargs["view"] is out["view"]
    # the shorthand declares image keys only
    _, out2, _, _ = PrepareViewBatch(views=["image", "image_2"], sample_keys=["label"])(batch, "cpu")
    assert out2["regions"].shape == (2, 3) and out2["regions_2"].eq(9).all()
    with pytest.raises(KeyError, match="image_3"):
        PrepareViewBatch(views=["image", "image_3"])(batch, "cpu")


def test_single_view_keeps_channels():
    """No views declared: (B, C, ...) stays as it is, whatever C (1-channel volumes, RGB images)."""
    for shape in [(2, 1, 4, 4, 4), (2, 3, 8, 8)]:
        batch = {"image": torch.rand(shape), "label": torch.zeros(shape[0], 1, *shape[2:]), "path": ["x", "y"]}
        inputs, out, _, _ = PrepareViewBatch()(batch, "cpu")
        assert inputs.shape == shape and out["label"].shape == batch["label"].shape and out["path"] == ["x", "y"]
        assert out["sample_id"].tolist() == [0, 1] and out["view"].tolist() == [0, 0]


def test_prepare_view_batch_rejects_bad_declarations():
    batch = {"image": torch.zeros(2, 1, 3), "image_2": torch.zeros(3, 1, 3), "label": torch.zeros(4)}
    with pytest.raises(ValueError, match="image_2"):
        PrepareViewBatch(views=["image", "image_2"])(batch, "cpu")
    with pytest.raises(ValueError, match="'label'"):
        PrepareViewBatch(views=["image", "image"], sample_keys=["label"])(batch, "cpu")
    with pytest.raises(ValueError, match="not both"):
        PrepareViewBatch(views=["image"], stacked_keys=["image"])
    with pytest.raises(ValueError, match="view 1 declares"):
        PrepareViewBatch(views=[{"image": "a", "regions": "b"}, {"image": "c"}])
    with pytest.raises(KeyError, match="'theta'"):
        PrepareViewBatch(network_kwargs={"theta": "affine"})(batch, "cpu")
    with pytest.raises(TypeError, match="dict"):
        PrepareViewBatch()([torch.zeros(1)], "cpu")


def test_multiview_transforms_draw_independently():
    t = RandMultiViewd("image", Compose([RandGaussianNoised("image", prob=1.0, std=1.0)]), num_views=3)
    t.set_random_state(0)
    out = t({"image": torch.zeros(1, 4, 4), "label": 0.5})
    assert out["image"].shape == (3, 1, 4, 4) and out["label"] == 0.5
    assert not torch.equal(out["image"][0], out["image"][1])
    a = RandMultiView(lambda x: x + torch.rand(1), num_views=2)(torch.zeros(1, 2))
    assert a.shape == (2, 1, 2)


def test_trainer_runs_multitask_and_logs_terms():
    items = [{"image": torch.rand(1, 8, 8) * (i + 1), "label": 0.1 * i} for i in range(8)]
    aug = Compose([RandFlipd("image", prob=0.5, spatial_axis=0)])
    ds = Dataset(items, RandMultiViewd("image", aug, num_views=2))
    net = RegressionContrastiveNet(TinyBackbone(), feature_dim=4, fc_name="fc", proj_dim=8)
    ecdf = ECDF([x["label"] for x in items])
    loss = MultiTaskRegressionLoss("l1", AdaptiveMarginContrastiveLoss(), ecdf, gamma_con=0.005)
    totals = []

    def recorded_loss(pred, targets):  # the value the trainer back-propagates, as the loss returns it
        out = loss(pred, targets)
        totals.append(float((out[0] if isinstance(out, tuple) else out).detach()))
        return out

    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    trainer = MultiViewTrainer(
        device="cpu",
        max_epochs=2,
        train_data_loader=DataLoader(ds, batch_size=4),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
        loss_function=recorded_loss,
        prepare_batch=PrepareViewBatch(stacked_keys=["image"], sample_keys=["label"]),
    )
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(loss_terms_output(e.state.output)))
    trainer.run()
    assert len(seen) == 4 and set(seen[0]) == {"loss", "loss_reg", "loss_con"}
    assert all(torch.isfinite(torch.tensor(list(s.values()))).all() for s in seen)
    # the logged total is the loss that was back-propagated, and the weighted sum of the logged terms
    assert [s["loss"] for s in seen] == pytest.approx(totals, rel=1e-6) and len(totals) == 4
    for s in seen:
        assert s["loss"] == pytest.approx(1.0 * s["loss_reg"] + 0.005 * s["loss_con"], rel=1e-5)
    # every parameter was trained (the regression head by L_reg, the projection head by L_con, the backbone by both)
    unchanged = [k for k, v in net.named_parameters() if torch.equal(v.detach(), before[k])]
    assert not unchanged, unchanged
    assert trainer.state.iteration == 4 and trainer.state.epoch == 2
    pred = SelectOutputInferer("pred")(torch.rand(3, 1, 8, 8), net)
    assert pred.shape == (3, 1)
    avg = SelectOutputInferer("pred", average_views=True, views_per_batch=2)(torch.rand(2, 3, 1, 8, 8), net)
    assert avg.shape == (2, 1)

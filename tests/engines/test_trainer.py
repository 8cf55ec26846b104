from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandFlipd, RandGaussianNoised

from monai_contrastive.engines import MultiViewTrainer, SelectOutputInferer, flatten_views, loss_terms_output
from monai_contrastive.losses import ECDF, AdaptiveMarginContrastiveLoss, MultiTaskRegressionLoss
from monai_contrastive.networks import RegressionContrastiveNet
from monai_contrastive.transforms import RandMultiView, RandMultiViewd


def test_flatten_stacked_views_sample_major():
    b, v = 3, 4
    batch = {"image": torch.arange(b * v).reshape(b, v, 1).float(), "label": torch.tensor([0.1, 0.2, 0.3])}
    out = flatten_views(batch)
    assert out["image"].shape == (12, 1)
    assert out["sample_id"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert out["view"].tolist() == [0, 1, 2, 3] * 3
    torch.testing.assert_close(out["label"], torch.tensor([0.1, 0.2, 0.3]).repeat_interleave(4))
    # row r of the image is view r % 4 of sample r // 4
    assert out["image"][5, 0].item() == 5.0


def test_flatten_separate_view_keys():
    batch = {"image": torch.zeros(2, 1, 3), "image_2": torch.ones(2, 1, 3), "label": torch.tensor([1.0, 2.0])}
    out = flatten_views(batch, view_keys=["image", "image_2"])
    assert out["image"].shape == (4, 1, 3) and out["image"][2:].eq(1).all()
    assert out["sample_id"].tolist() == [0, 1, 0, 1] and out["view"].tolist() == [0, 0, 1, 1]
    assert out["label"].tolist() == [1.0, 2.0, 1.0, 2.0]
    with pytest.raises(KeyError, match="image_3"):
        flatten_views(batch, view_keys=["image", "image_3"])


def test_multiview_transforms_draw_independently():
    t = RandMultiViewd("image", Compose([RandGaussianNoised("image", prob=1.0, std=1.0)]), num_views=3)
    t.set_random_state(0)
    out = t({"image": torch.zeros(1, 4, 4), "label": 0.5})
    assert out["image"].shape == (3, 1, 4, 4) and out["label"] == 0.5
    assert not torch.equal(out["image"][0], out["image"][1])
    a = RandMultiView(lambda x: x + torch.rand(1), num_views=2)(torch.zeros(1, 2))
    assert a.shape == (2, 1, 2)


class _Backbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_trainer_runs_multitask_and_logs_terms():
    items = [{"image": torch.rand(1, 8, 8) * (i + 1), "label": 0.1 * i} for i in range(8)]
    aug = Compose([RandFlipd("image", prob=0.5, spatial_axis=0)])
    ds = Dataset(items, RandMultiViewd("image", aug, num_views=2))
    net = RegressionContrastiveNet(_Backbone(), feature_dim=4, fc_name="fc", proj_dim=8)
    ecdf = ECDF([x["label"] for x in items])
    loss = MultiTaskRegressionLoss("l1", AdaptiveMarginContrastiveLoss(), ecdf, gamma_con=0.005)
    trainer = MultiViewTrainer(
        device="cpu",
        max_epochs=2,
        train_data_loader=DataLoader(ds, batch_size=4),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
        loss_function=loss,
    )
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(loss_terms_output(e.state.output)))
    trainer.run()
    assert len(seen) == 4 and set(seen[0]) == {"loss", "loss_reg", "loss_con"}
    assert all(torch.isfinite(torch.tensor(list(s.values()))).all() for s in seen)
    pred = SelectOutputInferer("pred")(torch.rand(3, 1, 8, 8), net)
    assert pred.shape == (3, 1)
    avg = SelectOutputInferer("pred", average_views=True, views_per_batch=2)(torch.rand(2, 3, 1, 8, 8), net)
    assert avg.shape == (2, 1)

"""The model, loss and batch contracts of the one trainer, proved on toys built from configs only.

Each toy is what a coming method needs: MoCo (momentum key encoder, queue), LRC (paired views whose region maps
follow their own view), CLEF (a second forward on the warped input) and plain supervised segmentation fine-tuning.
Every test asserts values, not only that a run finished.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.losses import DiceCELoss
from monai.utils import set_determinism
from torch import nn

IMPORTS = ["$import torch", "$import monai", "$import monai_contrastive"]


def _trainer(config: dict):
    parser = ConfigParser({"imports": IMPORTS, **config})
    return parser.get_parsed_content("trainer"), parser


def _trainer_block(items, prepare_batch=None, batch_size=2, max_epochs=1, shuffle=False, handlers=()) -> dict:
    """The trainer section every toy shares: its network, optimizer and loss are the config's own."""
    block = {
        "_target_": "monai_contrastive.engines.MultiViewTrainer",
        "device": "cpu",
        "max_epochs": max_epochs,
        "train_data_loader": {"_target_": "DataLoader", "dataset": items, "batch_size": batch_size, "shuffle": shuffle},
        "network": "@network",
        "optimizer": "@optimizer",
        "loss_function": "@loss",
        "train_handlers": list(handlers),
    }
    if prepare_batch is not None:
        block["prepare_batch"] = {"_target_": "monai_contrastive.engines.PrepareViewBatch", **prepare_batch}
    return block


def _data(n: int, **makers) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{k: f(g, i) for k, f in makers.items()} for i in range(n)]


# ---------------------------------------------------------------------------------------------------------- MoCo


def loop_infonce(q, k, queue, tau):
    """MoCo eq. 1 written out for each query."""
    total = 0.0
    for i in range(q.shape[0]):
        pos = math.exp(float(q[i] @ k[i]) / tau)
        neg = sum(math.exp(float(q[i] @ queue[j]) / tau) for j in range(queue.shape[0]))
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


def test_toy_moco_momentum_queue_and_loss():
    set_determinism(0)
    m, size, tau = 0.9, 5, 0.07
    items = _data(
        6, image=lambda g, i: torch.rand(1, 6, 6, generator=g), image_2=lambda g, i: torch.rand(1, 6, 6, generator=g)
    )
    config = {
        "encoder": {
            "_target_": "monai_contrastive.networks.ContrastiveNet",
            "encoder": {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3},
            "heads": {
                "embedding": {
                    "_target_": "monai_contrastive.networks.ProjectionHead",
                    "in_dim": 4,
                    "hidden_dim": 0,
                    "out_dim": 8,
                }
            },
        },
        "network": {
            "_target_": "monai_contrastive.networks.MomentumContrastNet",
            "encoder": "@encoder",
            "dim": 8,
            "queue_size": size,
            "momentum": m,
        },
        "loss": {
            "_target_": "monai_contrastive.losses.MultiTermLoss",
            "terms": {
                "moco": {
                    "loss": {"_target_": "monai_contrastive.losses.InfoNCELoss", "temperature": tau},
                    "inputs": ["query", "key", "queue"],
                }
            },
        },
        "optimizer": {"_target_": "torch.optim.SGD", "params": "$@network.parameters()", "lr": 0.5},
        "trainer": _trainer_block(
            items,
            {"network_kwargs": {"key_input": "image_2"}},
            handlers=[
                {"_target_": "monai_contrastive.handlers.MomentumUpdate", "network": "@network"},
                {"_target_": "monai_contrastive.handlers.QueueUpdate", "network": "@network"},
            ],
        ),
    }
    trainer, parser = _trainer(config)
    net = parser.get_parsed_content("network")
    seen = []

    def before(engine):
        seen.append({"k_prev": [p.detach().clone() for p in net.key_encoder.parameters()]})

    def after(engine):
        out = engine.state.output
        seen[-1].update(
            loss=out["loss"].item(),
            moco=out["loss_moco"].item(),
            q=out["pred"]["query"].detach(),
            k=out["pred"]["key"].detach(),
            queue_in=out["pred"]["queue"],
            queue_after=net.queue.clone(),
            q_params=[p.detach().clone() for p in net.encoder.parameters()],
            k_params=[p.detach().clone() for p in net.key_encoder.parameters()],
            key_grads=[p.grad for p in net.key_encoder.parameters()],
        )

    trainer.add_event_handler(Events.ITERATION_STARTED, before)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, after)
    queue0 = net.queue.clone()
    trainer.run()
    assert trainer.state.iteration == 3 and len(seen) == 3
    keys = torch.cat([s["k"] for s in seen])  # (6, 8) in the order they were computed
    for t, s in enumerate(seen):
        # the loss is InfoNCE on this step's queries, keys and the queue before this step's keys were enqueued
        assert s["loss"] == s["moco"]
        assert s["loss"] == pytest_approx(loop_infonce(s["q"], s["k"], s["queue_in"], tau))
        expected_in = queue0 if t == 0 else seen[t - 1]["queue_after"]
        torch.testing.assert_close(s["queue_in"], expected_in)
        # eq. 2 after the optimiser step: theta_k = m theta_k(prev) + (1 - m) theta_q
        for kp, kprev, qp in zip(s["k_params"], s["k_prev"], s["q_params"]):
            torch.testing.assert_close(kp, m * kprev + (1 - m) * qp)
        assert all(g is None for g in s["key_grads"]), "the key encoder must get no gradient"
    # FIFO with wrap-around: 6 keys into 5 slots -> slot 0 holds key 5, slots 1..4 keys 1..4
    torch.testing.assert_close(net.queue, torch.cat([keys[5:6], keys[1:5]]))
    assert int(net.queue_ptr) == 1
    # the query encoder moved, the key encoder followed but lags behind
    assert not torch.equal(seen[-1]["q_params"][0], seen[-1]["k_params"][0])


def pytest_approx(x):
    import pytest

    return pytest.approx(x, rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------------------------------- LRC-style paired views


class _Identity(nn.Module):
    """A 1x1 conv initialised to the identity: output = input; returns named outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        nn.init.ones_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        return {"embedding": self.conv(x)}


def _region_config(views):
    g = torch.Generator().manual_seed(1)
    items = []
    for _ in range(4):
        r1 = torch.randint(0, 5, (1, 6, 6), generator=g)
        r2 = torch.randint(5, 10, (1, 6, 6), generator=g)  # another map: view 2 is a warped copy
        items.append({"image": r1.float(), "regions": r1, "image_2": r2.float(), "regions_2": r2})
    return {
        "network": _Identity(),
        "loss": {
            "_target_": "monai_contrastive.losses.MultiTermLoss",
            "terms": {
                "region": {"loss": "$torch.nn.L1Loss()", "inputs": ["embedding", ["$lambda r: r.float()", "regions"]]}
            },
        },
        "optimizer": {"_target_": "torch.optim.SGD", "params": "$@network.parameters()", "lr": 0.0},
        "trainer": _trainer_block(items, {"views": views}),
    }


def test_toy_paired_views_region_maps_follow_their_view():
    """Each view's image equals its own region map, so |embedding - regions| is 0 iff view 2 got regions_2."""
    views = [{"image": "image", "regions": "regions"}, {"image": "image_2", "regions": "regions_2"}]
    trainer, _ = _trainer(_region_config(views))
    losses, rows = [], []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: rows.append(e.state.output["image"].shape[0]))
    trainer.run()
    assert losses == [0.0, 0.0] and rows == [4, 4]
    # control: pairing view 2's image with view 1's regions is caught (mean |r2 - r1| >= 1 by construction)
    wrong = [{"image": "image", "regions": "regions"}, {"image": "image_2", "regions": "regions"}]
    trainer, _ = _trainer(_region_config(wrong))
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    trainer.run()
    assert all(v >= 0.5 for v in losses)


# ---------------------------------------------------------------------------------------- CLEF-style two forwards


class _TwoForward(nn.Module):
    """``f`` and, given affine parameters, ``f(T(x))`` and ``T(f(x))`` (CLEF's equivariance pair)."""

    def __init__(self, kernel_size: int = 1) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.f = nn.Conv2d(1, 3, kernel_size, padding=kernel_size // 2)

    @staticmethod
    def warp(x, theta):
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def forward(self, x, theta=None):
        fx = self.f(x)
        if theta is None:
            return {"pred": fx}
        return {"pred": fx, "f_of_warped": self.f(self.warp(x, theta)), "warped_f": self.warp(fx, theta)}


def _rotation(angle):
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0]])


def _equivariance_config(kernel_size):
    g = torch.Generator().manual_seed(2)
    items = [{"image": torch.rand(1, 12, 12, generator=g), "affine": _rotation(0.3 * (i + 1))} for i in range(4)]
    return {
        "network": _TwoForward(kernel_size),
        "loss": {
            "_target_": "monai_contrastive.losses.MultiTermLoss",
            "terms": {"equivariance": {"loss": "$torch.nn.MSELoss()", "inputs": ["f_of_warped", "warped_f"]}},
        },
        "optimizer": {"_target_": "torch.optim.SGD", "params": "$@network.parameters()", "lr": 0.0},
        "trainer": _trainer_block(items, {"network_kwargs": {"theta": "affine"}}),
    }


def test_toy_two_forward_equivariance_gets_the_transform():
    # a 1x1 conv commutes with resampling (border padding keeps the bias constant): T(f(x)) == f(T(x))
    trainer, _ = _trainer(_equivariance_config(1))
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    trainer.run()
    assert len(losses) == 2 and max(losses) < 1e-10
    # a 3x3 conv does not commute with rotation: the loss equals the one computed by hand on the same batch
    trainer, parser = _trainer(_equivariance_config(3))
    net = parser.get_parsed_content("network")
    outs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outs.append(e.state.output))
    trainer.run()
    for out in outs:
        x, theta = out["image"], out["label"]["affine"]
        expect = F.mse_loss(net.f(net.warp(x, theta)), net.warp(net.f(x), theta))
        assert out["loss"].item() == pytest_approx(expect.item()) and expect.item() > 1e-4


# --------------------------------------------------------------------------------- supervised segmentation (1 view)


def _segmentation_config(spatial_dims, in_channels, items):
    return {
        "network": {
            "_target_": "monai.networks.nets.UNet",
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "out_channels": 3,
            "channels": [8, 16],
            "strides": [2],
            "num_res_units": 0,
        },
        "loss": {
            "_target_": "monai_contrastive.losses.MultiTermLoss",
            "terms": {"dice_ce": {"loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True}}},
        },
        "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 0.01},
        "trainer": _trainer_block(items, max_epochs=15),
    }


def _seg_items(shape, in_channels):
    g = torch.Generator().manual_seed(4)
    items = []
    for _ in range(4):
        lab = torch.zeros(1, *shape, dtype=torch.long)
        c = [int(torch.randint(2, s - 3, (1,), generator=g)) for s in shape]
        lab[(0, *[slice(ci - 2, ci + 2) for ci in c])] = 1
        lab[(0, *[slice(0, 2) for _ in shape])] = 2
        img = lab.float().repeat(in_channels, *[1] * len(shape)) + 0.1 * torch.randn(in_channels, *shape, generator=g)
        items.append({"image": img, "label": lab})
    return items


def test_single_view_supervised_segmentation_1_and_3_channels():
    for spatial_dims, in_channels, shape in [(3, 1, (8, 8, 8)), (2, 3, (16, 16))]:
        set_determinism(0)
        items = _seg_items(shape, in_channels)
        trainer, parser = _trainer(_segmentation_config(spatial_dims, in_channels, items))
        net0 = copy.deepcopy(parser.get_parsed_content("network"))
        outs = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outs.append(e.state.output))
        trainer.run()
        first = outs[0]
        # the batch kept its channel axis and the prediction has one channel per class
        assert first["image"].shape == (2, in_channels, *shape)
        assert first["pred"].shape == (2, 3, *shape)
        # the first loss is DiceCE of the initial network on the first batch (the loss saw pred and label)
        x = torch.stack([it["image"] for it in items[:2]])
        y = torch.stack([it["label"] for it in items[:2]])
        expect = DiceCELoss(to_onehot_y=True, softmax=True)(net0(x), y)
        assert first["loss"].item() == pytest_approx(expect.item())
        assert first["loss_dice_ce"].item() == pytest_approx(expect.item())
        assert outs[-1]["loss"].item() < 0.6 * first["loss"].item(), "training must lower the loss"

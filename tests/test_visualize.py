"""AdaCon Fig. 3 feature figure: angular plot and similarity vs ECDF label distance."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from monai_contrastive.losses import ECDF
from monai_contrastive.visualize import angular_positions, feature_figure, feature_figure_for_bundle


def _ordered(n=200, dim=16, seed=0):
    """Embeddings on a half circle at angle pi * y: similarity decreases with label distance."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(0.0, 1.0, n)
    z = np.zeros((n, dim))
    z[:, 0], z[:, 1] = np.cos(np.pi * y), np.sin(np.pi * y)
    return z, y, ECDF(y)(torch.as_tensor(y)).numpy()


def test_ordered_embeddings_strongly_negative_spearman(tmp_path):
    z, y, phi = _ordered()
    out = str(tmp_path / "sub" / "ordered.png")
    res = feature_figure(z, y, phi, out, title="ordered", num_pairs=1000, dpi=60)
    assert res["path"] == out
    assert os.path.isfile(out) and os.path.getsize(out) > 0
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert res["spearman"] < -0.8
    assert res["slope"] < 0
    # endpoints are the least similar pair: the lowest and highest labels, ~180 degrees apart
    assert {int(np.argmin(y)), int(np.argmax(y))} == set(res["endpoints"])
    assert res["min_cosine"] < -0.95


def test_random_embeddings_small_spearman(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.uniform(0.0, 1.0, 300)
    z = torch.as_tensor(rng.standard_normal((300, 32)), dtype=torch.float32)  # tensors are accepted too
    res = feature_figure(z, torch.as_tensor(y), ECDF(y)(torch.as_tensor(y)), str(tmp_path / "random.png"), dpi=60)
    assert os.path.getsize(res["path"]) > 0
    assert abs(res["spearman"]) < 0.15


def test_angular_positions_follow_label_order():
    z, y, _ = _ordered(n=50)
    angles, (i, j) = angular_positions(z)
    assert angles[i] == 0.0 and angles.max() == angles[j]
    assert np.all((angles >= 0) & (angles <= np.pi))
    # on the half circle the angle is the label distance to e1 (times pi)
    np.testing.assert_allclose(angles, np.pi * np.abs(y - y[i]), atol=1e-6)


def test_small_n_uses_all_pairs_and_bad_shapes(tmp_path):
    z, y, phi = _ordered(n=10)
    res = feature_figure(z, y, phi, str(tmp_path / "small.png"), num_pairs=2000, dpi=60)
    assert res["num_pairs"] == 45
    with pytest.raises(ValueError):
        feature_figure(z, y[:5], phi, str(tmp_path / "bad.png"))


def test_bundle_missing_checkpoint_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"fold3.*model\.pt"):
        feature_figure_for_bundle(str(tmp_path), fold=3)


def _tiny_bundle(root):
    """A bundle whose network is a linear backbone on 8 x 8 images and whose validation items live in memory."""
    import json

    config = {
        "imports": ["$import numpy as np", "$import torch", "$import monai"],
        "bundle_root": ".",
        "fold": 0,
        "device": "$torch.device('cpu')",
        "val_items": "$[{'image': np.full((1, 8, 8), i / 40, 'float32'), 'label': float(i)} for i in range(40)]",
        "backbone": "$torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.Tanh())",
        "network_def": {
            "_target_": "monai_contrastive.networks.RegressionContrastiveNet",
            "backbone": "@backbone",
            "feature_dim": 16,
            "proj_dim": 8,
            "fc_name": None,
        },
        "validate": {"preprocessing": {"_target_": "EnsureTyped", "keys": ["image", "label"], "track_meta": False}},
    }
    os.makedirs(os.path.join(root, "configs"))
    with open(os.path.join(root, "configs", "train.json"), "w") as f:
        json.dump(config, f)
    from monai.bundle import ConfigParser

    parser = ConfigParser(config)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    os.makedirs(os.path.join(root, "models", "fold0"))
    state = {"model": net.state_dict(), "ecdf": ECDF([float(i) for i in range(0, 80, 2)]).state_dict()}
    torch.save(state, os.path.join(root, "models", "fold0", "model.pt"))


def test_feature_figure_for_bundle(tmp_path):
    root = str(tmp_path / "bundle")
    _tiny_bundle(root)
    res = feature_figure_for_bundle(root, fold=0, figure_kwargs={"num_pairs": 300, "dpi": 60})
    assert res["path"] == os.path.join(root, "eval", "feature_figure_fold0.png")
    assert os.path.getsize(res["path"]) > 0
    assert res["num_pairs"] == 300 and np.isfinite(res["spearman"])
    with pytest.raises(FileNotFoundError, match="fold1"):
        feature_figure_for_bundle(root, fold=1)

"""load_bundle_weights (every inference.json's ``network``): strict loading, and an error that says what the
checkpoint holds and what to run instead of a raw ``load_state_dict`` dump."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from monai_contrastive.networks import FoldEnsemble, load_bundle_weights, weights_mismatch


def _net(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.ReLU(), nn.Conv2d(width, 2, 1))


def _bundle(tmp_path, with_demo: bool = True):
    root = tmp_path / "my_bundle"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    if with_demo:
        (root / "configs" / "demo.json").write_text("{}")
    return root


def test_weights_load_strictly_plain_or_under_key(tmp_path):
    root = _bundle(tmp_path)
    torch.manual_seed(0)
    trained = _net(8)
    torch.save({"model": trained.state_dict(), "epoch": 3}, root / "models" / "model.pt")
    net = load_bundle_weights(_net(8), str(root / "models" / "model.pt"), bundle_root=str(root))
    for k, v in trained.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k
    torch.save(trained.state_dict(), root / "models" / "plain.pt")
    net = load_bundle_weights(_net(8), str(root / "models" / "plain.pt"), key=None)
    assert torch.equal(net[0].weight, trained[0].weight)
    with pytest.raises(FileNotFoundError, match="no weights at .*absent.pt"):
        load_bundle_weights(_net(8), str(root / "models" / "absent.pt"))


def test_demo_weights_give_an_error_that_says_what_to_run(tmp_path):
    """A model of the demo's smaller network served by the paper-size inference.json."""
    root = _bundle(tmp_path)
    path = root / "models" / "model.pt"
    torch.save(_net(4).state_dict(), path)
    (root / "models" / "model.pt.json").write_text(json.dumps({"epoch": 30, "metric_name": "val_mae", "metric": 0.5}))
    with pytest.raises(RuntimeError) as info:
        load_bundle_weights(_net(16), str(path), bundle_root=str(root))
    msg = str(info.value)
    assert msg.startswith(f"the weights {str(path)!r} do not fit network_def of my_bundle's inference.json")
    # what differs and how big each side is (values counted here: 4*1*3*3 + 4 + 2*4 + 2 = 50; 16*9 + 16 + 32 + 2)
    assert "3 tensor(s) of another shape (0.weight: checkpoint (4, 1, 3, 3), network (16, 1, 3, 3);" in msg
    assert "the checkpoint holds 50 values in 4 tensors, the network 194 in 4" in msg
    assert "saved at epoch 30, val_mae 0.5" in msg
    assert "`monai-contrastive infer my_bundle --demo True`" in msg and "inference_overrides" in msg
    # no raw load_state_dict dump chained below it
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "size mismatch for" not in msg
    # a bundle without a demo does not point at one
    plain = _bundle(tmp_path / "other", with_demo=False)
    torch.save(_net(4).state_dict(), plain / "models" / "model.pt")
    with pytest.raises(RuntimeError) as info:
        load_bundle_weights(_net(16), str(plain / "models" / "model.pt"), bundle_root=str(plain))
    assert "--demo" not in str(info.value) and "set network_def to the network the model was trained with" in str(
        info.value
    )


def test_fold_ensemble_names_the_member_that_does_not_fit(tmp_path):
    root = _bundle(tmp_path)
    paths = []
    for fold, width in enumerate((8, 4)):  # fold 1 was trained with another width
        paths.append(str(root / "models" / f"fold{fold}.pt"))
        torch.save({"model": _net(width).state_dict()}, paths[-1])
    with pytest.raises(RuntimeError, match="fold1.pt' do not fit .*0.weight: checkpoint \\(4, 1, 3, 3\\)"):
        load_bundle_weights(FoldEnsemble(_net(8), 2), str(root / "models" / "model.pt"), member_paths=paths)
    torch.save({"model": _net(8).state_dict()}, paths[1])
    ens = load_bundle_weights(FoldEnsemble(_net(8), 2), str(root / "models" / "model.pt"), member_paths=paths)
    assert torch.equal(ens.models[1][0].weight, torch.load(paths[1], weights_only=True)["model"]["0.weight"])


def test_weights_mismatch_lists_missing_and_unexpected_keys():
    net = _net(4)
    state = dict(net.state_dict())
    assert weights_mismatch(net, state) == ""
    state.pop("2.bias")
    state["head.weight"] = torch.zeros(3)
    diff = weights_mismatch(net, state)
    assert "1 missing from the checkpoint (e.g. 2.bias)" in diff and "1 not in the network (e.g. head.weight)" in diff

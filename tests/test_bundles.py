"""The bundle registry: what the commands read from a bundle's configs/commands.json (and its demo config)."""

from __future__ import annotations

import json
import os

import pytest

from monai_contrastive import bundles


def _bundle(root, commands=None, **configs) -> str:
    """A bundle folder with metadata.json, the given configs (name -> content) and commands.json."""
    cfg = os.path.join(root, "configs")
    os.makedirs(cfg)
    files = {"metadata.json": {"version": "0.1.0", "task": "a test bundle"}, **configs}
    if commands is not None:
        files["commands.json"] = commands
    for name, content in files.items():
        with open(os.path.join(cfg, name), "w") as f:
            json.dump(content, f)
    return str(root)


def test_discovery_follows_the_environment(tmp_path, monkeypatch):
    _bundle(tmp_path / "b" / "one")
    _bundle(tmp_path / "b" / "two")
    (tmp_path / "b" / "not_a_bundle").mkdir()
    monkeypatch.setenv(bundles.BUNDLES_ENV, str(tmp_path / "b"))
    assert bundles.bundles_dir() == str(tmp_path / "b")
    assert [b["name"] for b in bundles.list_bundles()] == ["one", "two"]
    assert bundles.list_bundles()[0] == {"name": "one", "task": "a test bundle", "version": "0.1.0"}
    assert bundles.bundle_path("two") == os.path.join(str(tmp_path / "b"), "two")
    with pytest.raises(FileNotFoundError, match="no bundle 'three'"):
        bundles.bundle_path("three")


def test_a_bundle_without_declarations_gets_the_defaults(tmp_path):
    root = _bundle(tmp_path / "plain", **{"train.json": {}, "demo.json": {"image_size": 8}, "inference.json": {}})
    assert bundles.bundle_commands(root) == {}
    assert bundles.demo_configs(root) == ["train.json", "demo.json"]
    assert bundles.demo_stages(root) == []
    assert bundles.demo_inference_overrides(root) == {}  # inference.json shares no key with demo.json
    assert bundles.pretrain_methods(root) == {}
    with pytest.raises(ValueError, match="declares no pretraining"):
        bundles.pretrain_configs(root)
    assert bundles.checkpoint_layout(root) == bundles.CheckpointLayout("model", "models/model.pt", None, "num_folds")


def test_single_pretrain_json_needs_no_method(tmp_path):
    root = _bundle(tmp_path / "single", **{"pretrain.json": {}})
    assert bundles.pretrain_configs(root) == ["pretrain.json"]
    with pytest.raises(ValueError, match="one pretraining"):
        bundles.pretrain_configs(root, "moco")
    with pytest.raises(ValueError, match="no demo pretraining"):
        bundles.pretrain_configs(root, demo=True)


def test_declared_commands(tmp_path):
    commands = {
        "_comment": "read by the tests",
        "demo": {
            "configs": ["train.json", "demo_small.json"],
            "stages": [{"title": "pretrain", "configs": ["pre.json"]}, {"configs": ["train.json"], "overrides": {}}],
            "inference_overrides": {"network_def#channels": 4},
        },
        "pretrain": {
            "methods": {"coarse": ["pre_common.json", "pre_coarse.json"], "fine": ["pre_common.json", "pre_fine.json"]},
            "default_method": "fine",
            "demo_configs": ["demo_pre.json"],
        },
        "checkpoints": {"checkpoint_key": "state_dict", "fold_checkpoints": "models/f{fold}/net.pt"},
    }
    demo_small = {"image_size": 16, "epochs": 1, "demo_stages": [{"configs": ["ignored.json"]}]}
    root = _bundle(
        tmp_path / "declared", commands, **{"demo_small.json": demo_small, "inference.json": {"image_size": 64}}
    )
    assert bundles.demo_configs(root) == ["train.json", "demo_small.json"]
    assert [s["configs"] for s in bundles.demo_stages(root)] == [["pre.json"], ["train.json"]]  # commands.json wins
    # the declared overrides, plus the demo config's keys that inference.json has
    assert bundles.demo_inference_overrides(root) == {"network_def#channels": 4, "image_size": 16}
    assert bundles.pretrain_configs(root) == ["pre_common.json", "pre_fine.json"]
    assert bundles.pretrain_configs(root, "coarse", demo=True) == [
        "pre_common.json",
        "pre_coarse.json",
        "demo_pre.json",
    ]
    layout = bundles.checkpoint_layout(root)
    assert layout.has_folds and layout.checkpoint_key == "state_dict" and layout.num_folds_key == "num_folds"
    for fold in (10, 2, 0):
        os.makedirs(os.path.join(root, "models", f"f{fold}"))
        open(os.path.join(root, "models", f"f{fold}", "net.pt"), "w").close()
    os.makedirs(os.path.join(root, "models", "fx"))
    open(os.path.join(root, "models", "fx", "net.pt"), "w").close()
    found = bundles.fold_checkpoints(root, layout.fold_checkpoints)
    assert found == [os.path.join(root, "models", f"f{k}", "net.pt") for k in (0, 2, 10)]  # by fold number


def test_demo_stages_from_the_demo_config(tmp_path):
    stages = [{"title": "one", "configs": ["a.json"]}, {"configs": ["b.json"], "overrides": {"init": "x"}}]
    root = _bundle(tmp_path / "staged", **{"demo.json": {"demo_stages": stages}})
    assert bundles.demo_stages(root) == stages
    bad = _bundle(tmp_path / "bad", **{"demo.json": {"demo_stages": [{"title": "no configs"}]}})
    with pytest.raises(ValueError, match=r"demo.json: demo stage 0 needs a 'configs' list"):
        bundles.demo_stages(bad)


@pytest.mark.parametrize(
    "commands,match",
    [
        ({"train": {}}, r"unknown section\(s\) \['train'\]"),
        ({"pretrain": ["a.json"]}, "'pretrain' must be an object"),
        ({"checkpoints": {"fold_checkpoints": "models/fold/model.pt"}}, "must contain '{fold}'"),
        ({"checkpoints": {"folds": 4}}, r"unknown key\(s\) \['folds'\]"),
        ({"pretrain": {"methods": {"a": []}}}, "non-empty list of config file names"),
        ({"checkpoints": {"extra_models": {"models/c.pt": 1}}}, "extra_models must map weight files"),
        ({"checkpoints": {"export_overrides": {"train.json": "none"}}}, "export_overrides must map config files"),
    ],
)
def test_bad_declarations_name_the_file(tmp_path, commands, match):
    root = _bundle(tmp_path / "b", commands)
    with pytest.raises(ValueError, match=match) as info:
        bundles.bundle_commands(root)
        bundles.checkpoint_layout(root)
        bundles.pretrain_configs(root, "a")
    assert "commands.json" in str(info.value)


def test_the_shipped_bundles_declare_what_the_commands_need():
    assert bundles.pretrain_configs("lrc_multiorgan_ct") == ["pretrain_common.json", "pretrain_lrc.json"]
    assert bundles.pretrain_configs("lrc_multiorgan_ct", "moco", demo=True) == [
        "pretrain_common.json",
        "pretrain_moco.json",
        "demo_pretrain.json",
    ]
    bmd = bundles.checkpoint_layout("adacon_bmd_xray")
    assert bmd.fold_checkpoints == "models/fold{fold}/model.pt" and bmd.num_folds_key == "num_folds"
    with open(os.path.join(bundles.bundle_path("adacon_bmd_xray"), "configs", "inference.json")) as f:
        assert bmd.num_folds_key in json.load(f)
    assert not bundles.checkpoint_layout("lrc_multiorgan_ct").has_folds
    assert not bundles.checkpoint_layout("adacon_lvef_echo").has_folds
    for name in ("adacon_bmd_xray", "adacon_lvef_echo", "lrc_multiorgan_ct"):
        configs = os.path.join(bundles.bundle_path(name), "configs")
        declared = bundles.demo_configs(name) + [c for s in bundles.demo_stages(name) for c in s["configs"]]
        declared += [c for m in bundles.pretrain_methods(name).values() for c in m]
        assert all(os.path.isfile(os.path.join(configs, c)) for c in declared), (name, declared)

"""``monai-contrastive export``: a trained bundle as a self-contained model-zoo bundle, checked the way zoo CI checks.

Our own checks of what the model zoo's CI checks (``ci/verify_bundle.py`` of Project-MONAI/model-zoo): the
necessary files, version/changelog, the metadata's keys and types (schema 20240725), file sizes (25 MB per file
unless hosted through ``large_files.yml``), ``verify_net_in_out`` and ``ckpt_export`` (TorchScript scripting) on
``network_def`` of ``configs/inference.json`` with no ``key_in_ckpt``, and ``models/model.ts`` loading. Then the
exported bundle runs its inference in a fresh virtualenv with only the packages its metadata lists (see
:mod:`tests.zoo_harness`), and gives the predictions of the source bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from monai_contrastive import cli
from monai_contrastive.export import SCHEMA_URL, ZOO_MAX_FILE_MB, read_large_files, rewrite_config, zoo_file_sizes

from . import zoo_harness as zh

NAMES = ["adacon_bmd_xray", "adacon_lvef_echo"]

# the keys the 20240725 bundle metadata schema requires, and the JSON types of what the bundles fill in
REQUIRED_META = {
    "version": str,
    "changelog": dict,
    "monai_version": str,
    "pytorch_version": str,
    "numpy_version": str,
    "required_packages_version": dict,
    "task": str,
    "description": str,
    "authors": str,
    "copyright": str,
    "network_data_format": dict,
}
OPTIONAL_META = {
    "supported_apps": dict,
    "name": str,
    "data_source": str,
    "data_type": str,
    "image_classes": str,
    "label_classes": str,
    "pred_classes": str,
    "eval_metrics": dict,
    "intended_use": str,
    "references": list,
}
TENSOR_FORMAT = {
    "type": str,
    "format": str,
    "num_channels": int,
    "spatial_shape": list,
    "dtype": str,
    "value_range": list,
    "is_patch_data": bool,
    "channel_def": dict,
}
SEMVER = r"^\d+\.\d+\.\d+$"


def check_metadata(meta: dict) -> list[str]:
    """What is wrong with ``meta`` for the 20240725 schema (empty when nothing)."""
    import re

    errors = []
    if meta.get("schema") != SCHEMA_URL:
        errors.append(f"schema {meta.get('schema')!r}")
    for key, typ in {**REQUIRED_META, **OPTIONAL_META}.items():
        if key not in meta:
            if key in REQUIRED_META:
                errors.append(f"missing {key}")
        elif not isinstance(meta[key], typ):
            errors.append(f"{key} is {type(meta[key]).__name__}, not {typ.__name__}")
    if not re.match(SEMVER, str(meta.get("version"))) or meta.get("version") not in meta.get("changelog", {}):
        errors.append("version not semver or not in changelog")
    for key, value in meta.get("required_packages_version", {}).items():
        if not isinstance(value, str) or not value:
            errors.append(f"required package {key}: {value!r}")
    for key, value in meta.get("eval_metrics", {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"eval_metrics {key} is {value!r}, not a number")
    fmt = meta.get("network_data_format", {})
    for part, first in (("inputs", "image"), ("outputs", "pred")):
        tensors = fmt.get(part, {})
        if first not in tensors:
            errors.append(f"network_data_format.{part}.{first} missing")
        for name, spec in tensors.items():
            for key, typ in TENSOR_FORMAT.items():
                if not isinstance(spec.get(key), typ):
                    errors.append(f"network_data_format.{part}.{name}.{key}: {spec.get(key)!r}")
            if part == "inputs" and not isinstance(spec.get("modality"), str):
                errors.append(f"network_data_format.inputs.{name}.modality")
            if len(spec.get("channel_def", {})) != spec.get("num_channels"):
                errors.append(f"network_data_format.{part}.{name}: channel_def does not name every channel")
    return errors


def _run(args: list[str], cwd, python: str = sys.executable, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("OMP_NUM_THREADS", "1")
    out = subprocess.run([python, *args], cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out


@pytest.fixture(scope="module", params=NAMES)
def exported(request, tmp_path_factory):
    """``(name, trained source bundle, exported bundle)``; the source inference's predictions in ``own``."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    src = zh.train_tiny(name, root / "src")
    cli.main(["export", str(src), "--out", str(root / "zoo")])
    dst = root / "zoo" / name
    zh.set_inference_defaults(src, name)
    zh.set_inference_defaults(dst, name)
    # the bundle's own inference (the plugin, fold checkpoints or models/model.pt as trained)
    wf = zh._workflow(src, ["inference.json"], "infer", **zh.infer_settings(name))
    wf.run()
    wf.finalize()
    own = zh.read_predictions(src / "eval" / "predictions.csv")
    assert own
    return name, src, dst, own


def test_export_layout_and_metadata(exported):
    name, src, dst, _ = exported
    assert zh.missing_zoo_files(dst) == []
    assert (dst / "scripts" / "monai_contrastive" / "networks" / "nets.py").is_file()
    assert not (dst / "scripts" / "monai_contrastive" / "cli.py").exists()
    meta = json.loads((dst / "configs" / "metadata.json").read_text())
    assert check_metadata(meta) == []
    # the source bundle's metadata passes the same checks
    assert check_metadata(json.loads((src / "configs" / "metadata.json").read_text())) == []
    packages = meta["required_packages_version"]
    assert "monai-contrastive" not in packages and "fire" in packages
    # every listed package is an installable distribution, at the version installed here
    from importlib import metadata as importlib_metadata

    for dist, version in packages.items():
        assert importlib_metadata.version(dist) == version, dist
    readers = {
        "adacon_bmd_xray": {"pillow", "pydicom", "itk", "nibabel"},
        "adacon_lvef_echo": {"opencv-python-headless"},
    }
    assert readers[name] <= set(packages)
    out = meta["network_data_format"]["outputs"]["pred"]
    assert out["format"] == "regression" and out["type"] != "probabilities"
    assert meta["supported_apps"]

    # every _target_ and import of the plugin points at the bundle's scripts/
    assert zh.plugin_references(dst) == []


def test_export_weights_and_zoo_sizes(exported):
    name, src, dst, _ = exported
    state = torch.load(dst / "models" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values()), "models/model.pt must be a plain state dict"
    if name == "adacon_bmd_xray":
        # the fold ensemble: member k is fold k's best model, tensor for tensor
        for k in range(zh.BMD_TRAIN["num_folds"]):
            fold = torch.load(src / "models" / f"fold{k}" / "model.pt", weights_only=True)["model"]
            assert set(fold) == {key[len(f"models.{k}.") :] for key in state if key.startswith(f"models.{k}.")}
            for key, value in fold.items():
                torch.testing.assert_close(state[f"models.{k}.{key}"], value)
        assert not any(key.startswith(f"models.{zh.BMD_TRAIN['num_folds']}.") for key in state)
        assert json.loads((dst / "configs" / "inference.json").read_text())["num_folds"] == 2
    else:
        trained = torch.load(src / "models" / "model.pt", weights_only=True)["model"]
        assert set(trained) == set(state)
        for key, value in trained.items():
            torch.testing.assert_close(state[key], value)
    assert any(k.startswith(("encoder.backbone.", "models.0.encoder.backbone.")) for k in state)

    entries = read_large_files(dst / "large_files.yml")
    assert {e["path"] for e in entries} == {"models/model.pt", "models/model.ts"}
    for e in entries:
        assert e["hash_type"] == "md5" and e["url"].startswith("https://")
        assert hashlib.md5((dst / e["path"]).read_bytes()).hexdigest() == e["hash_val"]
    sizes = zoo_file_sizes(dst)
    assert "models/model.pt" not in sizes and "configs/metadata.json" in sizes
    assert max(sizes.values()) < ZOO_MAX_FILE_MB, max(sizes.items(), key=lambda kv: kv[1])


def test_zoo_ci_checks_in_bundle_folder(exported, tmp_path):
    """verify_net_in_out and ckpt_export as zoo CI runs them (``network_def``, no ``key_in_ckpt``), from the bundle
    folder; model.ts loads and gives the eager network's output."""
    name, src, dst, _ = exported
    common = ["--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", "--bundle_root", "."]
    _run(["-m", "monai.bundle", "verify_net_in_out", "network_def", *common], dst)
    out = tmp_path / "verify_model.ts"
    _run(
        [
            "-m",
            "monai.bundle",
            "ckpt_export",
            "network_def",
            "--filepath",
            str(out),
            "--ckpt_file",
            "models/model.pt",
            *common,
        ],
        dst,
    )
    meta = json.loads((dst / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]["inputs"]["image"]
    shape = [1, fmt["num_channels"], *fmt["spatial_shape"]]
    if name == "adacon_lvef_echo":
        shape = [1, 3, 4, 32, 32]  # any clip size: keep the check small
    torch.manual_seed(0)
    x = torch.rand(*shape) * (255 if name == "adacon_lvef_echo" else 1)
    # the eager network of the source bundle (the plugin) with the exported weights
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(src / "configs" / "inference.json"))
    parser["bundle_root"] = str(src)
    if name == "adacon_bmd_xray":
        parser["num_folds"] = 2
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(dst / "models" / "model.pt", weights_only=True))
    net.eval()
    with torch.no_grad():
        expected = net(x)
        assert expected.shape == (1, 1)
        for ts in (dst / "models" / "model.ts", out):
            torch.testing.assert_close(torch.jit.load(str(ts))(x), expected, atol=1e-5, rtol=1e-4)
    extra = {"inference.json": ""}
    torch.jit.load(str(dst / "models" / "model.ts"), _extra_files=extra)
    assert "network_def" in json.loads(extra["inference.json"])


def test_rewrite_config_keeps_expressions():
    config = {
        "imports": ["$import os", "$import monai_contrastive", "$import monai_contrastive.data"],
        "net": {"_target_": "monai_contrastive.networks.FoldEnsemble", "x": "$monai_contrastive.data.f(1)"},
        "other": {"_target_": "EfficientNetBN", "name": "monai_contrastive"},
    }
    out = rewrite_config(config)
    assert out["imports"] == [
        "$import os",
        "$import scripts.monai_contrastive as monai_contrastive",
        "$import scripts.monai_contrastive.data",
    ]
    assert out["net"] == {
        "_target_": "scripts.monai_contrastive.networks.FoldEnsemble",
        "x": "$monai_contrastive.data.f(1)",
    }
    assert out["other"] == config["other"]


def test_export_refuses_untrained_and_existing(tmp_path):
    bundle = tmp_path / "adacon_lvef_echo"
    import shutil

    shutil.copytree(zh.BUNDLES_DIR / "adacon_lvef_echo", bundle, ignore=shutil.ignore_patterns("models", "eval"))
    from monai_contrastive.export import export_bundle

    with pytest.raises(FileNotFoundError, match="train the bundle first"):
        export_bundle(str(bundle), str(tmp_path / "zoo"))
    (tmp_path / "zoo" / "adacon_lvef_echo").mkdir(parents=True)
    (bundle / "models").mkdir()
    torch.save({"x": torch.zeros(1)}, bundle / "models" / "model.pt")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_bundle(str(bundle), str(tmp_path / "zoo"))


def test_exported_bundle_runs_with_only_its_listed_packages(exported, tmp_path):
    """A fresh virtualenv with only the metadata's packages (no monai-contrastive) runs the exported inference, the
    zoo's checks, and predicts what the source bundle predicts on the same files."""
    name, src, dst, own = exported
    python, work = zh.zoo_work_copy(dst, tmp_path)
    args = ["-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--bundle_root", "."]
    args += ["--dataset_dir", str(src / "demo_data")]
    args += ["--dataloader#num_workers", "0"]
    res = zh.run_in(python, args, cwd=str(work))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    theirs = zh.read_predictions(work / "eval" / "predictions.csv")
    assert set(theirs) == set(own)
    for k in own:
        assert theirs[k] == pytest.approx(own[k], abs=1e-4), k
    zh.run_zoo_ci_commands(python, work)
    assert (work / "models" / "verify.ts").stat().st_size > 1e6


def _tiny_net(output_key="pred"):
    from torch import nn

    from monai_contrastive.networks import RegressionContrastiveNet

    backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return RegressionContrastiveNet(backbone, 4, proj_dim=3, fc_name=None, output_key=output_key)


@pytest.mark.parametrize("output_key", [None, "pred", "embedding", "features"])
def test_networks_script_with_every_output(output_key, tmp_path):
    """torch.jit.script (zoo ckpt_export's default) compiles the network and its fold ensemble whatever the output:
    the dict of named outputs or one tensor, with the same values as eager mode."""
    from monai_contrastive.networks import FoldEnsemble

    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8)
    for net in (_tiny_net(output_key).eval(), FoldEnsemble(_tiny_net(output_key), num_models=3).eval()):
        path = tmp_path / f"{type(net).__name__}.ts"
        torch.jit.save(torch.jit.script(net), str(path))
        loaded = torch.jit.load(str(path))
        eager, scripted = net(x), loaded(x)
        if output_key is None:
            assert set(scripted) == set(eager) == {"features", "pred", "embedding"}
            for k in eager:
                torch.testing.assert_close(scripted[k], eager[k])
        else:
            torch.testing.assert_close(scripted, eager)


def test_fold_ensemble_loads_served_model_or_folds(tmp_path):
    from monai_contrastive.networks import FoldEnsemble

    members = [_tiny_net() for _ in range(2)]
    for k, m in enumerate(members):
        torch.save({"model": m.state_dict(), "ecdf": {}}, tmp_path / f"fold{k}.pt")
    folds = [str(tmp_path / f"fold{k}.pt") for k in range(2)]
    x = torch.rand(2, 1, 8, 8)
    expected = torch.stack([m.eval()(x) for m in members]).mean(0)
    # no served model: the fold checkpoints, member by member
    ens = FoldEnsemble(_tiny_net(), num_models=2).load_weights(str(tmp_path / "model.pt"), folds).eval()
    torch.testing.assert_close(ens(x), expected)
    # the served models/model.pt (a plain state dict of the ensemble) wins over the folds
    torch.save(ens.state_dict(), tmp_path / "model.pt")
    gone = [str(tmp_path / "gone0.pt"), str(tmp_path / "gone1.pt")]  # not read when models/model.pt exists
    other = FoldEnsemble(_tiny_net(), num_models=2).load_weights(str(tmp_path / "model.pt"), gone).eval()
    torch.testing.assert_close(other(x), expected)
    assert set(other.state_dict()) == {f"models.{k}.{n}" for k in range(2) for n in members[0].state_dict()}
    with pytest.raises(FileNotFoundError, match="fold checkpoints not found"):
        FoldEnsemble(_tiny_net(), num_models=2).load_weights(None, [folds[0], str(tmp_path / "missing.pt")])
    with pytest.raises(ValueError, match="2 ensemble members but 1"):
        FoldEnsemble(_tiny_net(), num_models=2).load_weights(None, folds[:1])


def test_export_demo_trained_model(tmp_path):
    """A model trained by ``demo`` (small demo backbone) exports with ``--demo True``; without it, a clear error."""
    import shutil

    from monai_contrastive.export import _parse_exported, _unload_scripts, export_bundle

    name = "adacon_bmd_xray"
    src = tmp_path / name
    shutil.copytree(zh.BUNDLES_DIR / name, src, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data"))
    torch.set_num_threads(1)
    wf = zh._workflow(src, ["train.json", "demo.json"], **zh.BMD_TRAIN, fold=0)  # the demo's ResNet backbone
    wf.run()
    wf.finalize()
    trained = torch.load(src / "models" / "fold0" / "model.pt", map_location="cpu", weights_only=True)
    trained = trained.get("model", trained)

    with pytest.raises(RuntimeError, match="--demo True") as e:
        export_bundle(str(src), str(tmp_path / "zoo"), torchscript=False)
    assert "do not fit network_def" in str(e.value)
    assert os.listdir(tmp_path / "zoo") == []  # nothing half-written left behind
    dst = export_bundle(str(src), str(tmp_path / "zoo"), demo=True)
    before = {f: os.path.getmtime(os.path.join(dst, f)) for f in ("models/model.pt", "configs/inference.json")}
    with pytest.raises(RuntimeError, match="--demo True"):  # a failed overwrite keeps the earlier export
        export_bundle(str(src), str(tmp_path / "zoo"), overwrite=True)
    assert os.listdir(tmp_path / "zoo") == [name]
    assert before == {f: os.path.getmtime(os.path.join(dst, f)) for f in before}

    config = json.loads(open(os.path.join(dst, "configs", "inference.json")).read())
    assert config["network_def"]["models"]["backbone"]["_target_"] == "monai.networks.nets.ResNet"
    assert config["num_folds"] == 1 and config["image_size"] == [64, 64]
    meta = json.loads(open(os.path.join(dst, "configs", "metadata.json")).read())
    assert "demo run" in meta["description"]
    served = torch.load(os.path.join(dst, "models", "model.pt"), map_location="cpu", weights_only=True)
    assert {k.split(".", 2)[2] for k in served} == set(trained)  # models.0.<the fold's own keys>
    for k, v in trained.items():
        assert torch.equal(served[f"models.0.{k}"], v)
    scripted = torch.jit.load(os.path.join(dst, "models", "model.ts"))
    sys.path.insert(0, dst)
    _unload_scripts()
    try:
        net = _parse_exported(dst).get_parsed_content("network_def")
        net.load_state_dict(served)
        net.eval()
        x = torch.randn(2, 1, 64, 64)
        with torch.no_grad():
            assert torch.allclose(scripted(x), net(x), atol=1e-5)
    finally:
        sys.path.remove(dst)
        _unload_scripts()

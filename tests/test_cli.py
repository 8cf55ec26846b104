"""The ``monai-contrastive`` command: help, error summaries, and the bundles found from a non-editable install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from monai_contrastive import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_help_prints_help_and_does_not_train(capsys, monkeypatch):
    started = []
    monkeypatch.setattr(cli, "run_bundle", lambda *a, **k: started.append(a))
    cli.main(["demo", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: monai-contrastive demo NAME [--KEY VALUE ...]")  # no bundle is the default
    assert "give a bundle name before --help" in out and "--batch_size" not in out
    cli.main(["demo", "adacon_bmd_xray", "--help"])
    out = capsys.readouterr().out
    assert not started, "--help must not start a run"
    assert out.startswith("usage: monai-contrastive demo NAME [--KEY VALUE ...]")
    # the command's own options and the bundle's config keys with their defaults
    assert "NAME" in out and "--dataset_dir" in out and "--batch_size" in out and "--fold" in out
    cli.main(["evaluate", "adacon_lvef_echo", "-h"])
    out = capsys.readouterr().out
    assert "--demo" in out and "--clip_length" in out and "adacon_lvef_echo" in out
    cli.main(["--help"])
    out = capsys.readouterr().out
    assert "commands:" in out and "train" in out and "infer" in out


def test_error_summary_names_the_item_first_and_last(tmp_path, capsys):
    """A datalist error raised deep inside MONAI's config evaluation: the first and last lines a user reads name
    the missing file, not "Failed to evaluate ConfigExpression"."""
    pytest.importorskip("itk")
    (tmp_path / "images").mkdir()
    data = {"training": [{"image": "images/missing_film.png", "label": 0.7, "patient": "A"}]}
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "adacon_bmd_xray", "--dataset_dir", str(tmp_path), "--bundle_root", str(tmp_path / "b")])
    assert info.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    # the summary follows whatever MONAI logged or warned on stderr before the error
    err = err[next(i for i, line in enumerate(err) if line.startswith("monai-contrastive: error:")) :]
    assert "missing_film.png" in err[0] and "item 0" in err[0], err
    assert "missing_film.png" in err[-1] and err[-1].startswith("monai-contrastive: error:"), err
    assert any("ConfigExpression" in line for line in err), "the chain is shown between the first and last line"


def _copy_source(dst: str) -> None:
    skip = shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", "models", "eval", "runs", "demo_data"
    )
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE"):
        if os.path.isfile(os.path.join(ROOT, name)):
            shutil.copy2(os.path.join(ROOT, name), dst)
    for name in ("monai_contrastive", "bundles"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(dst, name), ignore=skip)


def test_cli_from_non_editable_install(tmp_path):
    """``pip install .`` (a wheel, not editable) in a fresh virtualenv: ``list`` finds the shipped bundles."""
    pytest.importorskip("setuptools")
    src, dist, venv = tmp_path / "src", tmp_path / "dist", tmp_path / "venv"
    src.mkdir()
    _copy_source(str(src))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        pip + ["--python", python, "install", "--no-deps", "--no-index", *map(str, dist.glob("*.whl"))], check=True
    )
    # the dependencies (fire, ...) come from this environment, after the new venv's own site-packages
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with open(os.path.join(site, "_deps_from_test_env.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MONAI_CONTRASTIVE_BUNDLES", "PYTHONPATH")}
    where = subprocess.run(
        [python, "-c", "import monai_contrastive, os; print(os.path.dirname(monai_contrastive.__file__))"],
        check=True,
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env=env,
    ).stdout.strip()
    assert where.startswith(str(venv)), f"not the installed copy: {where}"
    exe = str(venv / "bin" / "monai-contrastive")
    out = subprocess.run([exe, "list"], check=True, capture_output=True, text=True, cwd=str(tmp_path), env=env).stdout
    assert "adacon_bmd_xray" in out and "adacon_lvef_echo" in out, out
    shipped = os.path.join(where, "_bundles", "adacon_bmd_xray", "configs", "train.json")
    assert os.path.isfile(shipped)
    out = subprocess.run(
        [exe, "demo", "adacon_lvef_echo", "--help"],
        check=True,
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env=env,
    ).stdout
    assert out.startswith("usage: monai-contrastive demo") and "--clip_length" in out


def test_demo_stages_run_in_order_with_the_user_options(monkeypatch):
    """The LRC demo is pretraining -> fine-tuning from it -> evaluation, each a bundle run; --KEY options reach all."""
    stages = cli.demo_stages("lrc_multiorgan_ct")
    configs = os.path.join(cli.bundle_path("lrc_multiorgan_ct"), "configs")
    assert [s["configs"][0] for s in stages] == ["pretrain_lrc.json", "pretrain_moco.json", "train.json", "train.json"]
    assert all(os.path.isfile(os.path.join(configs, c)) for s in stages for c in s["configs"])
    calls = []
    monkeypatch.setattr(cli, "run_bundle", lambda name, files, **o: calls.append((name, files, o)))
    cli.CLI().demo("lrc_multiorgan_ct", device="cpu")
    assert [c[1] for c in calls] == [s["configs"] for s in stages]
    assert all(c[2]["device"] == "cpu" and c[2]["dataset_dir"] == "" for c in calls)
    assert calls[2][2]["init"] == "lrc_moco" and calls[3][1][-1] == "evaluate.json"
    # bundles without stages keep the one run of train.json + demo.json
    calls.clear()
    cli.CLI().demo("adacon_bmd_xray")
    assert [c[1] for c in calls] == [["train.json", "demo.json"]]


def test_pretrain_command_picks_the_method_config(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "run_bundle", lambda name, files, **o: calls.append((name, files, o)))
    cli.CLI().pretrain("lrc_multiorgan_ct", method="moco", demo=True)
    assert calls == [("lrc_multiorgan_ct", ["pretrain_moco.json", "demo_pretrain.json"], {"dataset_dir": ""})]
    # the bundle's default method, declared in its configs/commands.json
    cli.CLI().pretrain("lrc_multiorgan_ct", dataset_dir="/data/ct")
    assert calls[-1] == ("lrc_multiorgan_ct", ["pretrain_lrc.json"], {"dataset_dir": "/data/ct"})
    # one method: none to give (AdaCon's two-stage scheme, stage 1: train.json + pretrain.json)
    cli.CLI().pretrain("adacon_bmd_xray")
    assert calls[-1] == ("adacon_bmd_xray", ["train.json", "pretrain.json"], {})
    with pytest.raises(ValueError, match=r"no pretraining method 'simclr'; its methods: \['lrc', 'moco'\]"):
        cli.CLI().pretrain("lrc_multiorgan_ct", method="simclr")
    with pytest.raises(ValueError, match="declares no pretraining"):
        cli.CLI().pretrain("adacon_lvef_echo")
    assert len(calls) == 3
    # the help lists the config keys of the bundle's default pretraining
    cli.main(["pretrain", "lrc_multiorgan_ct", "--help"])
    assert "config keys of lrc_multiorgan_ct (pretrain_lrc.json)" in capsys.readouterr().out

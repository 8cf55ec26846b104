"""A fresh virtualenv holding only what an exported bundle's metadata lists, as a model-zoo user would install it.

``monai==<monai_version>``, ``numpy==<numpy_version>``, ``torch==<pytorch_version>`` and every
``required_packages_version`` entry, nothing else (no monai-contrastive). The virtualenv is created on first use when
``MONAI_CONTRASTIVE_ZOO_INSTALL=1`` or ``CI=true`` (under ``<repo>/.venv-zoo/<hash of the package list>``, or
``$MONAI_CONTRASTIVE_ZOO_VENVS/<hash>``) and reused after; otherwise an existing one is used and the tests skip when
there is none.

torch and itk are not downloaded: their wheels are gigabytes (torch with its CUDA libraries over 5 GB, itk 1.5 GB),
so when the running interpreter has exactly the pinned version, the files of that distribution and of its
requirements are hard-linked into the new virtualenv (the same files pip installed here, with their ``.dist-info``,
so pip counts them as installed; see :func:`tests.monailabel_harness.link_from_here`); everything else comes from
the package index with ``pip install``, and ``pip check`` must pass. Set ``MONAI_CONTRASTIVE_ZOO_TORCH_FROM_INDEX=1``
to download them too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .monailabel_harness import _install_lock, _run_logged, _tail, check_free_disk, link_from_here

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_ENV = "MONAI_CONTRASTIVE_ZOO_INSTALL"
VENVS_ENV = "MONAI_CONTRASTIVE_ZOO_VENVS"
TORCH_FROM_INDEX_ENV = "MONAI_CONTRASTIVE_ZOO_TORCH_FROM_INDEX"
STAMP_NAME = ".monai_contrastive_zoo_stamp.json"
# disk a zoo virtualenv takes beside the hard-linked torch and itk (monai, scipy, opencv, ...), with a margin
ZOO_VENV_GB = 1.5


def install_allowed() -> bool:
    return os.environ.get(INSTALL_ENV, "").strip() == "1" or os.environ.get("CI", "").strip().lower() == "true"


def pinned_packages(meta: dict) -> list[str]:
    """``name==version`` for everything the metadata lists."""
    pins = [f"monai=={meta['monai_version']}", f"numpy=={meta['numpy_version']}", f"torch=={meta['pytorch_version']}"]
    pins += [f"{k}=={v}" for k, v in sorted(meta.get("required_packages_version", {}).items())]
    return pins


def venv_dir(meta: dict) -> Path:
    key = hashlib.sha256(json.dumps(pinned_packages(meta)).encode()).hexdigest()[:12]
    root = Path(os.environ.get(VENVS_ENV) or REPO_ROOT / ".venv-zoo")
    return (root / key).resolve()


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def zoo_python(meta: dict) -> str | None:
    """The python of the bundle's virtualenv, created when allowed; ``None`` when there is none."""
    venv = venv_dir(meta)
    python = _python(venv)
    wanted = {"pins": pinned_packages(meta)}
    if not install_allowed():
        try:
            ok = json.loads((venv / STAMP_NAME).read_text()) == wanted
        except (OSError, ValueError):
            ok = False
        return str(python) if ok and python.exists() else None
    with _install_lock(venv):
        try:
            if json.loads((venv / STAMP_NAME).read_text()) == wanted and python.exists():
                return str(python)
        except (OSError, ValueError):
            pass
        log = venv / "install.log"
        check_free_disk(venv, ZOO_VENV_GB, "the model-zoo virtualenv")
        if not python.exists():
            _run_logged([sys.executable, "-m", "venv", str(venv)], log)
        pins = pinned_packages(meta)
        torch_pin = f"torch=={meta['pytorch_version']}"
        if os.environ.get(TORCH_FROM_INDEX_ENV, "") != "1":
            # torch and itk (the two heavy ones) as pip installed them here, when the pinned versions match
            heavy = {"torch": meta["pytorch_version"]}
            if "itk" in meta.get("required_packages_version", {}):
                heavy["itk"] = meta["required_packages_version"]["itk"]
            link_from_here(python, log, heavy)
        _run_logged([str(python), "-m", "pip", "install", "--disable-pip-version-check", *pins], log)
        check = subprocess.run(
            [str(python), "-m", "pip", "check"], capture_output=True, text=True, env=_clean_env(python)
        )
        with open(log, "a") as f:
            f.write(f"\n$ pip check\n{check.stdout}{check.stderr}")
        if check.returncode != 0:
            raise RuntimeError(f"pip check failed in {venv}:\n{check.stdout}{check.stderr}\n{_tail(log)}")
        assert torch_pin in pins
        (venv / STAMP_NAME).write_text(json.dumps(wanted))
        return str(python)


def _clean_env(python: Path | str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    bin_dir = str(Path(python).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["VIRTUAL_ENV"] = str(Path(python).parent.parent)
    return env


def run_in(python: str, args: list[str], cwd: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python args...`` in ``cwd`` with a clean environment (nothing of this interpreter on the path)."""
    env = _clean_env(python)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def skip_reason(meta: dict) -> str:
    return (
        f"no zoo virtualenv at {venv_dir(meta)} (set {INSTALL_ENV}=1 or CI=true to create it: a fresh virtualenv with"
        f" only {' '.join(pinned_packages(meta))})"
    )


# --------------------------------------------------------------------------------------------------- zoo checks

# files every exported bundle has (zoo CI's necessary files and what our export adds)
ZOO_FILES = (
    "configs/metadata.json",
    "configs/inference.json",
    "configs/train.json",
    "models/model.pt",
    "models/model.ts",
    "large_files.yml",
    "LICENSE",
    "docs/README.md",
    "docs/data_license.txt",
    "scripts/__init__.py",
)


def missing_zoo_files(dst: Path) -> list[str]:
    return [rel for rel in ZOO_FILES if not (Path(dst) / rel).is_file()]


def plugin_references(dst: Path) -> list[str]:
    """Files of an exported bundle that still refer to the installed plugin instead of its ``scripts/`` copy."""
    bad = []
    for f in sorted((Path(dst) / "configs").glob("*.json")):
        text = f.read_text()
        if '"monai_contrastive.' in text or "$import monai_contrastive" in text:
            bad.append(f"configs/{f.name}")
    for f in sorted((Path(dst) / "scripts").rglob("*.py")):
        text = f.read_text()
        if "from monai_contrastive" in text or "import monai_contrastive" in text:
            bad.append(str(f.relative_to(dst)))
    return bad


def zoo_work_copy(dst: Path, tmp_path: Path) -> tuple[str, Path]:
    """``(python, folder)``: the virtualenv with only the packages the exported bundle's metadata lists (the calling
    test skips when there is none; the plugin must not import there) and a copy of the exported bundle to run in, as
    a zoo user who downloaded it has."""
    import pytest

    meta = json.loads((Path(dst) / "configs" / "metadata.json").read_text())
    python = zoo_python(meta)
    if python is None:
        pytest.skip(skip_reason(meta))
    check = run_in(python, ["-c", "import monai_contrastive"], cwd=str(tmp_path))
    assert check.returncode != 0 and "No module named 'monai_contrastive'" in check.stderr
    work = Path(tmp_path) / Path(dst).name
    shutil.copytree(dst, work)
    return python, work


def run_zoo_ci_commands(python: str, work: Path) -> None:
    """``verify_net_in_out`` and ``ckpt_export`` of ``network_def`` as zoo CI runs them (defaults: n = 1, no
    ``key_in_ckpt``), in the bundle folder ``work`` with ``python``; ``models/verify.ts`` must load."""
    import torch

    common = ["--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", "--bundle_root", "."]
    res = run_in(python, ["-m", "monai.bundle", "verify_net_in_out", "network_def", *common], cwd=str(work))
    assert res.returncode == 0, res.stderr[-5000:]
    args = ["-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", "models/verify.ts", *common]
    res = run_in(python, args, cwd=str(work))
    assert res.returncode == 0, res.stderr[-5000:]
    assert torch.jit.load(str(Path(work) / "models" / "verify.ts")) is not None


# --------------------------------------------------------------------------------------------------- tiny bundles

BUNDLES_DIR = REPO_ROOT / "bundles"

# the BMD bundle at its inference size (128 x 128), two folds of two iterations each
BMD_TRAIN = {
    "demo_kwargs": {"num_patients": 24, "image_size": 64},
    "batch_size": 4,
    "num_views": 2,
    "num_workers": 0,
    "epoch_length": 2,
    "iterations": 2,
    "val_interval": 1,
    "precise_bn_batches": 1,
    "num_folds": 2,
    "amp": False,
    "device": "cpu",
}
BMD_INFER = {"demo_kwargs": BMD_TRAIN["demo_kwargs"], "num_folds": 2, "device": "cpu"}

# the LVEF bundle on short, small clips (the network takes any clip size), one epoch
ECHO_CLIPS = {"clip_length": 4, "clip_period": 2, "frame_stride": 8}
ECHO_TRAIN = {
    "demo_kwargs": {"num_videos": 20, "frames": [40, 60]},
    **ECHO_CLIPS,
    "frame_pad": 12,
    "batch_size": 4,
    "val_batch_size": 4,
    "num_views": 2,
    "num_workers": 0,
    "learning_rate": 0.001,
    "epochs": 1,
    "amp": False,
    "device": "cpu",
}
# what a user sets in inference.json for a model trained on such clips
ECHO_INFER = {
    "demo_kwargs": ECHO_TRAIN["demo_kwargs"],
    **ECHO_CLIPS,
    "test_clip_stride": 8,
    "test_max_clips": 3,
    "num_workers": 0,
    "amp": False,
    "device": "cpu",
}


def _workflow(root, files, workflow_type="train", **overrides):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=[os.path.join(root, "configs", f) for f in files],
        meta_file=os.path.join(root, "configs", "metadata.json"),
        workflow_type=workflow_type,
        bundle_root=str(root),
        **overrides,
    )
    wf.initialize()
    return wf


def train_tiny(name: str, root: Path) -> Path:
    """Copy bundle ``name`` to ``root/name`` and train it briefly on its synthetic demo data (every fold)."""
    import torch

    torch.set_num_threads(1)
    dst = Path(root) / name
    shutil.copytree(
        BUNDLES_DIR / name, dst, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", ".cache")
    )
    if name == "adacon_bmd_xray":
        for fold in range(BMD_TRAIN["num_folds"]):
            wf = _workflow(dst, ["train.json"], **BMD_TRAIN, fold=fold)
            wf.run()
            wf.finalize()
    else:
        wf = _workflow(dst, ["train.json"], **ECHO_TRAIN)
        wf.run()
        wf.finalize()
    return dst


def infer_settings(name: str) -> dict:
    return dict(BMD_INFER if name == "adacon_bmd_xray" else ECHO_INFER)


def set_inference_defaults(bundle: Path, name: str) -> None:
    """Write the inference settings the tiny model needs into ``configs/inference.json`` (as a user would for a
    model trained with them: MONAI Label runs the config as it is)."""
    path = Path(bundle) / "configs" / "inference.json"
    config = json.loads(path.read_text())
    for k, v in infer_settings(name).items():
        if k in config and k not in ("device", "num_folds"):
            config[k] = v
    path.write_text(json.dumps(config, indent=4) + "\n")


def read_predictions(path: Path) -> dict[str, float]:
    """``{file name: value}`` from a ClassificationSaver ``predictions.csv``."""
    import csv

    with open(path) as f:
        return {os.path.basename(r[0]): float(r[1]) for r in csv.reader(f) if r}


def check_exported_segmentation(dst: Path, inputs: Path, seg: Path, tmp_path: Path):
    """Run the exported segmentation bundle ``dst``'s inference.json on ``inputs`` in the virtualenv with only its
    listed packages (the test skips without one), check that it writes the source bundle's label map ``seg`` (same
    affine, > 99.9 % equal voxels) and that zoo CI's commands pass there; return the label map."""
    import nibabel as nib
    import numpy as np

    python, work = zoo_work_copy(dst, tmp_path)
    out = Path(tmp_path) / "theirs"
    args = ["-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--bundle_root", "."]
    args += ["--input_dir", str(inputs), "--output_dir", str(out), "--amp", "False", "--device", "cpu"]
    res = run_in(python, args, cwd=str(work))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    theirs_img, own_img = nib.load(str(out / Path(seg).name)), nib.load(str(seg))
    np.testing.assert_allclose(theirs_img.affine, own_img.affine, atol=1e-5)
    theirs, own = np.asarray(theirs_img.dataobj), np.asarray(own_img.dataobj)
    assert theirs.shape == own.shape and (theirs == own).mean() > 0.999
    run_zoo_ci_commands(python, work)
    return own

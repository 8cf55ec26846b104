"""The bundles' ``multi_gpu_train.json`` run under ``torchrun`` with 2 CPU processes (gloo) on tiny demo data.

Checks, per bundle: the run exits cleanly; DDP keeps the two replicas' parameters identical; only rank 0 writes
checkpoints and TensorBoard files; the trainer ran the expected number of (sharded) iterations.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from monai_contrastive.data import load_echonet_filelist

from .test_adacon_bmd_xray import TINY as BMD_TINY
from .test_adacon_lvef_echo import TINY as ECHO_TINY
from .test_clef_ct import PRETRAIN as CLEF_PRETRAIN
from .test_clef_ct import TINY as CLEF_TINY
from .test_lrc_multiorgan_ct import TINY as LRC_TINY

BUNDLES_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "bundles")
WORLD = 2

# every rank writes its checkpoints and TensorBoard files into its own folder, so the test can see who wrote what
# (``RANK`` is set by torchrun for every process, before anything in the config is evaluated)
RANK_DIRS = {
    "ckpt_dir": "$os.path.join(@bundle_root, 'models', 'rank' + os.environ['RANK'])",
    "log_dir": "$os.path.join(@bundle_root, 'runs', 'rank' + os.environ['RANK'])",
}

# the tiny settings of the single-process bundle tests; ``device`` is left to the config under test (the subprocess
# sees no GPU)
CASES = {
    "adacon_bmd_xray": {**{k: v for k, v in BMD_TINY.items() if k != "device"}, "iterations": 4},
    "adacon_lvef_echo": {
        **{k: v for k, v in ECHO_TINY.items() if k != "device"},
        "epochs": 2,
        # shared by the ranks (rank 0 fits it, the others read it), so out of the rank-specific ckpt_dir
        "normalization_file": "$os.path.join(@bundle_root, 'models', 'normalization.json')",
    },
    "lrc_multiorgan_ct": {**{k: v for k, v in LRC_TINY.items() if k != "device"}, "epochs": 2},
    # MoCo pretraining: query encoder, EMA key encoder and the queue (filled with both ranks' keys) must agree
    "lrc_multiorgan_ct:pretrain_moco": {
        **{k: v for k, v in LRC_TINY.items() if k in ("demo_kwargs", "patch_size", "batch_size", "num_workers", "amp")},
        "slices_per_volume": 2,
        "queue_size": 16,
        "elastic#spacing": [8, 8],
        "epochs": 2,
    },
    # CLEF fine-tuning: early stopping reads the validation loss gathered over both ranks
    "clef_ct": {**{k: v for k, v in CLEF_TINY.items() if k != "device"}, "epochs": 2},
    # CLEF pretraining: both forwards of eq. 2 under DDP
    "clef_ct:pretrain": {**{k: v for k, v in CLEF_PRETRAIN.items() if k != "device"}, "epochs": 2},
}
# the configs of a case, the multi-GPU override last (default: train.json + multi_gpu_train.json)
CONFIGS = {
    "lrc_multiorgan_ct:pretrain_moco": ("pretrain_common.json", "pretrain_moco.json", "multi_gpu_pretrain.json"),
    "clef_ct:pretrain": ("pretrain.json", "multi_gpu_pretrain.json"),
}

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch.distributed.run") is None
    or not dist.is_available()
    or not dist.is_gloo_available(),
    reason="needs torch.distributed with the gloo backend (torchrun)",
)


def _expected_iterations(name: str, root: str) -> int:
    case = CASES[name]
    if name == "adacon_bmd_xray":
        return case["iterations"]
    if name == "lrc_multiorgan_ct:pretrain_moco":  # 4 pretraining images over the ranks, full batches only (MoCo)
        return case["epochs"] * (math.ceil(4 / WORLD) // case["batch_size"])
    if name == "clef_ct":  # fold 0's 4 training volumes over the ranks (even_divisible), batch 1
        return case["epochs"] * math.ceil(4 / WORLD)
    if name == "clef_ct:pretrain":  # the 2 unlabelled volumes, one per rank
        return case["epochs"] * math.ceil(2 / WORLD)
    if name == "lrc_multiorgan_ct":  # the few-label subset split over the ranks, last batch kept
        return case["epochs"] * math.ceil(math.ceil(case["num_train_volumes"] / WORLD) / case["batch_size"])
    # one epoch is this rank's shard of TRAIN (DistributedSampler, even_divisible) in full batches
    n_train = len(load_echonet_filelist(os.path.join(root, "demo_data"), "TRAIN"))
    return case["epochs"] * (math.ceil(n_train / WORLD) // case["batch_size"])


def _run(cmd: list[str], cwd: str, env: dict, timeout: float = 300) -> tuple[int | None, str]:
    """Run ``cmd`` in its own process group (killed as a whole on timeout); return its exit code and output tail."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        stderr += f"\n(killed after {timeout} s)"
    return proc.returncode, f"--- stdout ---\n{stdout[-6000:]}\n--- stderr ---\n{stderr[-6000:]}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_multi_gpu_train_on_cpu(name, tmp_path):
    bundle = name.split(":")[0]
    *train_configs, mgpu_config = CONFIGS.get(name, ("train.json", "multi_gpu_train.json"))
    root = str(tmp_path / bundle)
    shutil.copytree(
        os.path.join(BUNDLES_DIR, bundle),
        root,
        ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", ".cache"),
    )
    configs = os.path.join(root, "configs")
    with open(os.path.join(configs, mgpu_config)) as f:
        run = json.load(f)["run"]
    out_dir = str(tmp_path / "replicas")
    os.makedirs(out_dir)
    # after the config's own run steps, every rank saves its replica (parameters and buffers) and its iteration count
    save = (
        "$torch.save({'state': {k: v.detach().cpu() for k, v in @network.module.state_dict().items()}, "
        "'iteration': @train#trainer.state.iteration}, "
        f"os.path.join({out_dir!r}, 'rank' + str(dist.get_rank()) + '.pt'))"
    )
    override = os.path.join(str(tmp_path), "test_override.json")
    with open(override, "w") as f:
        json.dump({**CASES[name], **RANK_DIRS, "run": run + [save]}, f, indent=4)

    files = [os.path.join(configs, c) for c in (*train_configs, mgpu_config)] + [override]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",  # torchrun of this interpreter
        "--standalone",
        "--nproc_per_node",
        str(WORLD),
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        json.dumps(files),
        "--meta_file",
        os.path.join(configs, "metadata.json"),
        "--bundle_root",
        root,
    ]
    returncode, out = _run(
        cmd, cwd=str(tmp_path), env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    )
    # (1) clean exit of both ranks
    assert returncode == 0, f"exit code {returncode}\n{out}"

    # (2) DDP keeps the replicas identical (gradients are averaged; buffers, e.g. the precise-BN statistics, are
    # broadcast from rank 0 at every forward, validation included), and both ranks ran the same number of iterations
    ranks = [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]
    assert ranks[0]["state"] and ranks[0]["state"].keys() == ranks[1]["state"].keys()
    for key, value in ranks[0]["state"].items():
        torch.testing.assert_close(ranks[1]["state"][key], value, rtol=0, atol=0, msg=lambda m, k=key: f"{k}: {m}")
    assert ranks[0]["iteration"] == ranks[1]["iteration"]

    # (3) checkpoints and TensorBoard files from rank 0 only
    rank0_models, rank0_runs = os.path.join(root, "models", "rank0"), os.path.join(root, "runs", "rank0")
    assert os.path.isfile(os.path.join(rank0_models, "checkpoint_last.pt"))
    assert os.path.isfile(os.path.join(rank0_models, "model.pt"))
    assert glob.glob(os.path.join(rank0_runs, "events.out.tfevents.*"))
    for folder in (os.path.join(root, "models", "rank1"), os.path.join(root, "runs", "rank1")):
        written = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
        assert not written, f"rank 1 wrote {written}"

    # (4) the expected number of iterations, each rank on its shard of the training data
    trainer = torch.load(os.path.join(rank0_models, "checkpoint_last.pt"), weights_only=False)["trainer"]
    expected = _expected_iterations(name, root)
    found = (trainer["iteration"], ranks[0]["iteration"])
    assert found == (expected, expected), f"iterations (checkpoint, run) {found}, expected {expected}"
    if name == "lrc_multiorgan_ct:pretrain_moco":  # each step enqueued the keys of both ranks
        case = CASES[name]
        keys_per_step = WORLD * case["batch_size"] * case["slices_per_volume"]
        assert int(ranks[0]["state"]["queue_ptr"]) == (expected * keys_per_step) % case["queue_size"]
        assert os.path.isfile(os.path.join(root, "models", "rank0", "model.pt.json"))

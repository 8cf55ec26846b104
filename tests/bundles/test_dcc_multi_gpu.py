"""DCC pretraining's ``multi_gpu_pretrain.json`` under ``torchrun`` with 2 CPU processes (gloo) on tiny demo data:
clean exit, identical replicas, sharded iterations, rank 0 alone writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from monai.networks.nets import UNet

from .test_dcc_multiphase_ct import TINY

BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "bundles", "dcc_multiphase_ct")
WORLD = 2

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo (torchrun)"
)


def _constant_coarse(path: str, organ: int = 1) -> None:
    """A coarse network whose mask is ``organ`` everywhere (zero weights, the output bias favours it): every volume
    then yields patches, whatever an untrained network would predict."""
    net = UNet(3, 1, 14, TINY["coarse_channels"], [2] * (len(TINY["coarse_channels"]) - 1), num_res_units=2)
    state = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    out_bias = [k for k, v in state.items() if v.ndim == 1 and v.shape[0] == 14][-1]
    state[out_bias][organ] = 5.0
    torch.save(state, path)


def test_dcc_pretraining_on_two_ranks(tmp_path):
    root = str(tmp_path / "dcc_multiphase_ct")
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", "cache"))
    configs = os.path.join(root, "configs")
    coarse = str(tmp_path / "coarse.pt")
    _constant_coarse(coarse)
    with open(os.path.join(configs, "multi_gpu_pretrain.json")) as f:
        run = json.load(f)["run"]
    out_dir = str(tmp_path / "replicas")
    os.makedirs(out_dir)
    save = (
        "$torch.save({'state': {k: v.detach().cpu() for k, v in @network.module.state_dict().items()}, "
        "'iteration': @train#trainer.state.iteration, 'patches': len(@train#patches)}, "
        f"os.path.join({out_dir!r}, 'rank' + str(dist.get_rank()) + '.pt'))"
    )
    override = {
        **{k: v for k, v in TINY.items() if k != "device"},
        # 3 training + 1 unlabelled volumes, one organ in the coarse mask, 4 patches each: 16 patches, 8 per rank
        "patches_per_organ": 4,
        "batch_size": 4,
        "epochs": 2,
        "proj_hidden": 64,
        "proj_dim": 32,
        "coarse_ckpt": coarse,
        "ckpt_dir": "$os.path.join(@bundle_root, 'models', 'rank' + os.environ['RANK'])",
        "log_dir": "$os.path.join(@bundle_root, 'runs', 'rank' + os.environ['RANK'])",
        "run": run + [save],
    }
    override_file = str(tmp_path / "override.json")
    with open(override_file, "w") as f:
        json.dump(override, f)
    files = [os.path.join(configs, "pretrain.json"), os.path.join(configs, "multi_gpu_pretrain.json"), override_file]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
        "-m", "monai.bundle", "run", "--config_file", json.dumps(files),
        "--meta_file", os.path.join(configs, "metadata.json"), "--bundle_root", root,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    ranks = [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]
    assert ranks[0]["patches"] == ranks[1]["patches"] == 16
    # DDP averages the gradients: identical parameters. BatchNorm running statistics are each rank's own after the
    # last forward (DDP broadcasts rank 0's buffers before a forward; SyncBatchNorm, which the override uses on GPUs,
    # needs CUDA), so they are not compared.
    params = [k for k in ranks[0]["state"] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(params) > 50  # ResNet-18 encoder and projection head
    for key in params:
        value = ranks[0]["state"][key]
        torch.testing.assert_close(ranks[1]["state"][key], value, rtol=0, atol=0, msg=lambda m, k=key: f"{k}: {m}")
    assert ranks[0]["iteration"] == ranks[1]["iteration"] == 2 * (16 // WORLD // 4)
    rank0 = os.path.join(root, "models", "rank0")
    saved = torch.load(os.path.join(rank0, "pretrained_dcc.pt"), weights_only=True)
    for key, value in saved.items():
        torch.testing.assert_close(value, ranks[0]["state"][key])
    rank1 = os.path.join(root, "models", "rank1")
    written = [os.path.join(d, f) for d, _, fs in os.walk(rank1) for f in fs]
    assert not written, f"rank 1 wrote {written}"

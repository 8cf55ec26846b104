"""The GPU benchmark suite's smoke mode: the same code as the GPU run at tiny sizes on the CPU, so it never rots."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUITE = os.path.join(ROOT, "benchmarks", "gpu_suite.py")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, SUITE, "--smoke", "--out-dir", str(out), "--work-dir", str(out / "work")],
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "gpu_suite_smoke.json") as f:
        result = json.load(f)
    with open(out / "gpu_suite_smoke.md") as f:
        md = f.read()
    return result, md, proc.stdout


def _finite_positive(*values):
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def test_smoke_writes_every_section_with_finite_numbers(smoke):
    result, md, stdout = smoke
    assert result["smoke"] is True and result["info"]["device"] == "cpu"
    for key in ("torch", "monai", "commit", "date", "cudnn"):
        assert key in result["info"]
    # 1. one fp32 row per present training step, each with its supervised baseline
    steps = {r["step"]: r for r in result["steps"]}
    present = {b: os.path.isdir(os.path.join(ROOT, "bundles", b)) for b in ("clef_ct", "dcc_multiphase_ct")}
    expected = {"AdaCon BMD", "AdaCon LVEF", "LRC pretraining", "MoCo pretraining", "LRC fused fine-tuning"}
    expected |= {"CLEF pretraining"} if present["clef_ct"] else set()
    expected |= {"DCC-CL pretraining"} if present["dcc_multiphase_ct"] else set()
    assert expected == {name.split(" (")[0] for name in steps}
    for r in result["steps"]:
        assert r["precision"] == "fp32"  # MONAI's trainers autocast on CUDA only
        assert r["images_per_step"] > 0 and r["repeats"] == 3
        assert _finite_positive(r["median_s"], r["images_per_s"], r["baseline_median_s"], r["ratio_vs_supervised"])
        assert f"| {r['step']} | fp32 |" in md
    # the bundles not in this checkout are skipped with a line that says why
    for name in ("clef_ct", "dcc_multiphase_ct"):
        if not os.path.isdir(os.path.join(ROOT, "bundles", name)):
            assert f"bundle `bundles/{name}` not present" in md
    # 2. a pipeline row per bundle config, compared with its step's consumption
    pipes = {(r["bundle"], r["config"]) for r in result["pipelines"]}
    assert pipes == {
        ("adacon_bmd_xray", "train.json"),
        ("adacon_lvef_echo", "train.json"),
        ("lrc_multiorgan_ct", "pretrain_common.json+pretrain_lrc.json"),
        ("lrc_multiorgan_ct", "pretrain_common.json+pretrain_moco.json"),
        ("lrc_multiorgan_ct", "train.json"),
    } | {(b, "pretrain.json") for b, here in present.items() if here}
    for r in result["pipelines"]:
        assert r["batches"] >= 2 and _finite_positive(r["images_per_s"]) and r["step"] in steps
    assert md.count("| yes |") + md.count("| no: the step would wait |") == len(result["pipelines"])
    # 3. losses: ours and the peer at every N, LRC and InfoNCE
    losses = [(r["loss"], r["size"]) for r in result["losses"]]
    for n in (64, 128):
        for name in ("AdaCon (this package)", "SupCon (this package)", "SupConLoss (pytorch-metric-learning)"):
            assert (name, f"N = {n}, D = 128") in losses
    assert {"LocalRegionContrastLoss", "InfoNCELoss (MoCo)"} <= {r["loss"] for r in result["losses"]}
    if present["dcc_multiphase_ct"]:
        dcc = [r["size"] for r in result["losses"] if r["loss"].startswith("DynamicContrastCorrelationLoss")]
        assert dcc == ["2n = 8, D = 256", "2n = 64, D = 256"]
    if present["clef_ct"]:
        clef = {r["loss"].split(" (")[0] for r in result["losses"] if "CLEF" in r["loss"]}
        assert clef == {"DiscriminativenessLoss", "EquivarianceLoss"}
    assert all(_finite_positive(r["median_s"]) for r in result["losses"])
    # 4. inference per case on the CPU: X-ray, echo video, CT volume
    cases = [r["case"].split(" (")[0] for r in result["inference"]]
    assert cases == ["X-ray", "echo video, all clips", "CT volume"] + ["CT volume"] * sum(present.values())
    if all(present.values()):
        assert [r["case"].split(" (")[1][:6] for r in result["inference"][2:]] == ["LRC Gl", "CLEF 3", "DCC-CL"]
    assert all(_finite_positive(r["median_s"]) and r["device"] == "cpu" for r in result["inference"])
    # the printed table is the written one
    assert md.splitlines()[0] in stdout and "## 4. Inference per case" in md


def test_without_cuda_the_full_run_stops_with_a_clear_message():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the full run would start")
    proc = subprocess.run([sys.executable, SUITE], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0 and "no CUDA device; run with --smoke" in proc.stderr

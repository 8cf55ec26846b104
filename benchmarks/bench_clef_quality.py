"""CLEF quality on the embedded synthetic CT with few labelled volumes: fine-tuned test Dice / NSD from random
initialisation vs from CLEF pretraining (and, with ``--ablation``, the loss-term ablation: decoding only, decoding +
discriminativeness, all three), over paired seeds.

Every random stage is redrawn per seed: the pretraining (its initialisation, voxel draws and affines), the labelled
subset (``subset_seed``), the fine-tuning's initialisation and order. Within a seed, every arm uses the same labelled
subset, so the arms are paired. The test volumes (the datalist's ``testing`` list) are never used for model selection
(that reads the fold's validation loss). Paired statistics: per-seed differences, mean ± std, exact Wilcoxon
signed-rank test (``benchmarks/paired_stats.py``).

    python benchmarks/bench_clef_quality.py --seeds 0 1 2 3 4 --num_train_volumes 4 \
        --out benchmarks/results/clef_quality.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from paired_stats import machine_load, mean_std, paired_summary  # noqa: E402

BUNDLE = os.path.join(ROOT, "bundles", "clef_ct")
ARMS = {
    "random": None,
    "clef": {"decoding": 1.0, "discriminativeness": 1.0, "equivariance": 1.0},
}
ABLATION = {
    "decoding": {"decoding": 1.0, "discriminativeness": 0.0, "equivariance": 0.0},
    "decoding+disc": {"decoding": 1.0, "discriminativeness": 1.0, "equivariance": 0.0},
}


def _run(work: str, configs: list[str], overrides: dict) -> None:
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=[os.path.join(work, "configs", c) for c in configs],
        meta_file=os.path.join(work, "configs", "metadata.json"),
        workflow_type="train",
        bundle_root=work,
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()


def run_arm(args, seed: int, arm: str, weights: dict | None, data_dir: str) -> dict:
    work = os.path.join(args.work_dir, f"seed{seed}", arm)
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(BUNDLE, work, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", "cache"))
    common = {"demo_dir": data_dir, "seed": seed, "amp": False, "device": "cpu"}
    t0 = time.time()
    if weights is not None:
        _run(
            work,
            ["pretrain.json", "demo_pretrain.json"],
            {**common, "epochs": args.pretrain_epochs, "loss_weights": weights},
        )
    tune = {
        **common,
        "init": "random" if weights is None else "clef",
        "num_train_volumes": args.num_train_volumes,
        "subset_seed": seed,
        "epochs": args.finetune_epochs,
    }
    _run(work, ["train.json", "demo.json"], tune)
    _run(work, ["train.json", "demo.json", "evaluate.json"], tune)
    with open(os.path.join(work, "eval", "seg_metrics.json")) as f:
        report = json.load(f)
    overall = report["overall"]
    return {
        "dice": overall["dice"]["mean"],
        "nsd": overall["nsd"]["mean"],
        "n_cases": report["n_cases"],
        "seconds": time.time() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--num_train_volumes", type=int, default=4)
    p.add_argument("--pretrain_epochs", type=int, default=4)
    p.add_argument("--finetune_epochs", type=int, default=12)
    p.add_argument("--ablation", action="store_true")
    p.add_argument("--work_dir", default="/tmp/clef_quality")
    p.add_argument("--out", default=os.path.join(HERE, "results", "clef_quality.md"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(2)
    arms = {**ARMS, **(ABLATION if args.ablation else {})}
    data_dir = os.path.join(args.work_dir, "demo_data")
    load0 = machine_load()
    results: dict[str, dict[int, dict]] = {a: {} for a in arms}
    for seed in args.seeds:
        for arm, weights in arms.items():
            results[arm][seed] = run_arm(args, seed, arm, weights, data_dir)
            print(f"seed {seed} {arm}: {results[arm][seed]}", flush=True)
    write(args, results, load0, machine_load())


def write(args, results: dict, load0: str, load1: str) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    lines = [
        "# CLEF quality on the synthetic CT (few labelled volumes)",
        "",
        f"commit {commit.stdout.strip()}, `{' '.join(sys.argv)}`; {load0} (start), {load1} (end).",
        f"Seeds {args.seeds}; {args.num_train_volumes} labelled training volumes (fold 0's, subset drawn per seed); "
        f"pretraining {args.pretrain_epochs} epochs, fine-tuning up to {args.finetune_epochs} epochs with early "
        "stopping; demo sizes (configs/demo.json, demo_pretrain.json). Test: the datalist's testing volumes.",
        "",
        "| arm | test Dice mean ± std over seeds | test NSD mean ± std |",
        "|---|---:|---:|",
    ]
    summary = {}
    for arm, per_seed in results.items():
        d, n = mean_std([r["dice"] for r in per_seed.values()]), mean_std([r["nsd"] for r in per_seed.values()])
        lines.append(f"| {arm} | {d[0]:.3f} ± {d[1]:.3f} | {n[0]:.3f} ± {n[1]:.3f} |")
    lines += ["", "Paired against random initialisation (other − random):", ""]
    for arm in results:
        if arm == "random":
            continue
        for metric in ("dice", "nsd"):
            s = paired_summary(
                {k: v[metric] for k, v in results["random"].items()}, {k: v[metric] for k, v in results[arm].items()}
            )
            summary[f"{arm}_{metric}"] = s
            lines.append(f"- {arm} {metric}: {json.dumps(s)}")
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"results": results, "paired": summary, "load": [load0, load1]}, f, indent=2, default=str)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

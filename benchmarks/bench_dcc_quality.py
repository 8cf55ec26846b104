"""Paired-seed quality of DCC-CL pretraining on the synthetic multi-phase CT: test Dice per phase after fine-tuning
from no pretraining, SimCLR and DCC (optionally AGCL), every random stage re-drawn per seed.

For each seed s: a fresh copy of the bundle; the coarse 3D network trained with seed s; SimCLR and DCC pretraining
(seed s) from that coarse network's patches; DeepLabV3+ fine-tuned (seed s) from each init (``none`` = random);
each evaluated on the test list (Dice per case, per phase). Then, per method against ``none`` and DCC against
SimCLR: mean +- std over seeds of the mean test Dice, per-seed differences, and a paired Wilcoxon signed-rank test
over seeds (scipy). The demo-sized settings of ``demo.json`` are used with the epochs given here.

    python benchmarks/bench_dcc_quality.py --seeds 0 1 2 3 4 --out benchmarks/results/dcc_quality.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUNDLE = os.path.join(ROOT, "bundles", "dcc_multiphase_ct")


def _run(root: str, configs: list[str], **overrides) -> None:
    from monai.bundle import run

    run(
        config_file=[os.path.join(root, "configs", c) for c in configs],
        meta_file=os.path.join(root, "configs", "metadata.json"),
        logging_file=os.path.join(root, "configs", "logging.conf"),
        bundle_root=root,
        **overrides,
    )


def run_seed(seed: int, args) -> dict:
    root = os.path.join(args.work_dir, f"seed{seed}")
    if not os.path.isdir(root):
        shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "cache", "demo_data"))
    common = {"seed": seed, "demo_dir": os.path.join(args.work_dir, "demo_data")}
    demo = ["demo.json"]
    _run(root, ["coarse.json", *demo], **common, epochs=args.coarse_epochs, val_interval=args.coarse_epochs)
    out = {}
    for method in args.methods:
        if method != "none":
            _run(root, ["pretrain.json", *demo], **common, pretrain_method=method, epochs=args.pretrain_epochs)
        out_dir = os.path.join(root, "eval", method)
        ckpt = os.path.join(root, "models", method)
        _run(root, ["train.json", *demo], **common, init=method, epochs=args.train_epochs, ckpt_dir=ckpt,
             pretrained_path="" if method == "none" else os.path.join(root, "models", f"pretrained_{method}.pt"),
             coarse_ckpt=os.path.join(root, "models", "coarse.pt"))  # fmt: skip
        _run(root, ["train.json", *demo, "evaluate.json"], **common, init=method, ckpt_dir=ckpt, output_dir=out_dir,
             coarse_ckpt=os.path.join(root, "models", "coarse.pt"), make_embedding_figure=False)  # fmt: skip
        with open(os.path.join(out_dir, "seg_metrics.json")) as f:
            report = json.load(f)
        out[method] = {
            "dice": report["overall"]["dice"]["mean"],
            "phases": {p: r["overall"]["dice"]["mean"] for p, r in report["phases"].items()},
        }
    with open(os.path.join(root, "eval", "coarse", "seg_metrics.json")) as f:
        out["coarse_dice"] = json.load(f)["overall"]["dice"]["mean"]
    return out


def paired(results: dict[int, dict], a: str, b: str) -> dict:
    from scipy.stats import wilcoxon

    seeds = sorted(results)
    diffs = [results[s][b]["dice"] - results[s][a]["dice"] for s in seeds]
    p = float(wilcoxon(diffs).pvalue) if sum(d != 0 for d in diffs) >= 2 else None
    return {
        "a": a,
        "b": b,
        "diffs": dict(zip(seeds, diffs)),
        "mean_diff": statistics.mean(diffs),
        "std_diff": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
        "b_better": sum(d > 0 for d in diffs),
        "p_wilcoxon": p,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=["none", "simclr", "dcc"])
    ap.add_argument("--coarse-epochs", type=int, default=60)
    ap.add_argument("--pretrain-epochs", type=int, default=3)
    ap.add_argument("--train-epochs", type=int, default=4)
    ap.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "monai_contrastive_bench_dcc_quality"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "dcc_quality.md"))
    args = ap.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    results = {s: run_seed(s, args) for s in args.seeds}
    tests = [paired(results, "none", m) for m in args.methods if m != "none"]
    if "simclr" in args.methods and "dcc" in args.methods:
        tests.append(paired(results, "simclr", "dcc"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    lines = [
        "# DCC-CL pretraining: paired-seed test Dice on the synthetic multi-phase CT",
        "",
        f"- date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, wall {(time.perf_counter() - t0) / 60:.0f} min, "
        f"load {load0:.1f} -> {os.getloadavg()[0]:.1f}, Python {platform.python_version()}, commit {commit.strip()}",
        f"- command: `{command}`",
        "",
        "| seed | coarse Dice | " + " | ".join(args.methods) + " |",
        "|---|---:|" + "---:|" * len(args.methods),
    ]
    for s in args.seeds:
        r = results[s]
        lines.append(
            f"| {s} | {r['coarse_dice']:.3f} | " + " | ".join(f"{r[m]['dice']:.3f}" for m in args.methods) + " |"
        )
    lines += ["", "| comparison | mean diff +- std | B better (seeds) | Wilcoxon p |", "|---|---:|---:|---:|"]
    for t in tests:
        p = "n/a" if t["p_wilcoxon"] is None else f"{t['p_wilcoxon']:.3f}"
        lines.append(
            f"| {t['b']} - {t['a']} | {t['mean_diff']:+.4f} +- {t['std_diff']:.4f} | {t['b_better']}/{len(args.seeds)} "
            f"| {p} |"
        )
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"results": results, "tests": tests, "command": command}, f, indent=2)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

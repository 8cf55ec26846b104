"""CLEF quality on the embedded synthetic CT with few labelled volumes: fine-tuned test Dice / NSD from random
initialisation vs from CLEF pretraining, and the loss-term ablation (decoding only; decoding + discriminativeness;
all three = CLEF), over paired seeds.

Every random stage is redrawn per seed s: each pretraining variant is run with seed s (its initialisation, voxel
draws and affines: the pretraining is repeated per seed, never shared between seeds), the labelled subset
(``subset_seed`` = s), the fine-tuning's initialisation and order (``seed`` = s). Within a seed every arm uses the
same labelled subset and the arms of a labelled count are paired; the two labelled counts of a seed fine-tune from the
same pretrainings. The test volumes (the datalist's ``testing`` list) are never used for training or model selection
(that reads the fold's validation loss). Paired statistics: per-seed differences, mean ± std, exact Wilcoxon
signed-rank test (``benchmarks/paired_stats.py``); the reading under the tables is written from them.

Demo sizes (``configs/demo.json``, ``demo_pretrain.json``: 32³, a narrow U-Net, fine-tuning lr 3e-3); the epochs are
arguments. Runs are saved one by one to ``--runs-json`` (a rerun skips what is there), so seeds can be split over
processes and merged::

    python benchmarks/bench_clef_quality.py --seeds 0 2 4 --runs-json /tmp/a.json --threads 1 &
    python benchmarks/bench_clef_quality.py --seeds 1 3 --runs-json /tmp/b.json --threads 1 &
    python benchmarks/bench_clef_quality.py --report-only --merge /tmp/a.json /tmp/b.json

Writes ``benchmarks/results/clef_quality.md`` and ``clef_quality_runs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from paired_stats import machine_load, mean_std, paired_reading, paired_summary  # noqa: E402

BUNDLE = os.path.join(ROOT, "bundles", "clef_ct")
# pretraining variants: the loss weights of configs/pretrain.json's loss_weights
VARIANTS = {
    "clef": {"decoding": 1.0, "discriminativeness": 1.0, "equivariance": 1.0},
    "decoding": {"decoding": 1.0, "discriminativeness": 0.0, "equivariance": 0.0},
    "decoding+disc": {"decoding": 1.0, "discriminativeness": 1.0, "equivariance": 0.0},
}
ARM_LABELS = {
    "random": "random init.",
    "decoding": "decoding only",
    "decoding+disc": "decoding + discriminativeness",
    "clef": "CLEF (decoding + discriminativeness + equivariance)",
}


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def _copy_bundle(work: str) -> None:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(BUNDLE, work, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", "cache"))


def _run(work: str, configs: list[str], overrides: dict) -> None:
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=[os.path.join(work, "configs", c) for c in configs],
        meta_file=os.path.join(work, "configs", "metadata.json"),
        logging_file=os.path.join(work, "configs", "logging.conf"),
        workflow_type="train",
        bundle_root=work,
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()


def pretrain(args, seed: int, variant: str) -> dict:
    """One pretraining of ``variant`` with seed ``seed``; returns its record (model path, wall time)."""
    import torch

    work = os.path.join(args.work_dir, f"seed{seed}", f"pretrain_{variant}")
    _copy_bundle(work)
    t0 = time.time()
    overrides = {
        "demo_dir": args.demo_dir,
        "seed": seed,
        "amp": False,
        "device": "cpu",
        "epochs": args.pretrain_epochs,
        "loss_weights": VARIANTS[variant],
    }
    _run(work, ["pretrain.json", "demo_pretrain.json"], overrides)
    model = os.path.join(work, "models", "pretrain", "model.pt")
    if not os.path.isfile(model):
        raise SystemExit(f"pretraining {variant} seed {seed} wrote no {model}")
    return {
        "seed": seed,
        "variant": variant,
        "loss_weights": VARIANTS[variant],
        "epochs": args.pretrain_epochs,
        "model": model,
        "wall_s": round(time.time() - t0, 1),
        "torch_threads": torch.get_num_threads(),
    }


def finetune(args, seed: int, arm: str, labels: int, pre: dict | None) -> dict:
    """Fine-tune ``arm`` (random, or from the seed's pretraining ``pre``) on ``labels`` volumes; evaluate on test."""
    import torch

    work = os.path.join(args.work_dir, f"seed{seed}", f"{arm}_n{labels}")
    _copy_bundle(work)
    tune = {
        "demo_dir": args.demo_dir,
        "seed": seed,
        "amp": False,
        "device": "cpu",
        "init": "random" if pre is None else "clef",
        "num_train_volumes": labels,
        "subset_seed": seed,
        "epochs": args.finetune_epochs,
    }
    if pre is not None:
        tune["pretrain_path"] = pre["model"]
    t0 = time.time()
    _run(work, ["train.json", "demo.json"], tune)
    train_s = time.time() - t0
    _run(work, ["train.json", "demo.json", "evaluate.json"], tune)
    with open(os.path.join(work, "eval", "seg_metrics.json")) as f:
        report = json.load(f)
    with open(os.path.join(work, "models", "val_metrics.json")) as f:
        val = json.load(f)
    return {
        "seed": seed,
        "arm": arm,
        "labels": labels,
        "pretraining": None if pre is None else {k: pre[k] for k in ("variant", "seed", "epochs", "wall_s")},
        "dice": report["overall"]["dice"]["mean"],
        "nsd": report["overall"]["nsd"]["mean"],
        "n_cases": report["n_cases"],
        "phases": {p: v["overall"]["dice"]["mean"] for p, v in (report.get("phases") or {}).items()},
        "best_epoch": val.get("best_checkpoint", {}).get("epoch"),
        "iterations": val.get("training", {}).get("iterations"),
        "train_s": round(train_s, 1),
        "wall_s": round(time.time() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _key(r: dict) -> str:
    return f"{r['seed']}/{r['arm']}/{r['labels']}" if "arm" in r else f"{r['seed']}/pretrain/{r['variant']}"


def _save(path: str, runs: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(runs, f, indent=1)
    os.replace(tmp, path)


def run_all(args, runs: dict) -> None:
    from monai_contrastive.data import resolve_datalist

    with open(os.path.join(BUNDLE, "configs", "demo.json")) as f:
        demo_kwargs = json.load(f)["demo_kwargs"]
    resolve_datalist("", "multiorgan_ct", args.demo_dir, **demo_kwargs)  # generated once, before any run
    # two passes over the seeds: random init. vs CLEF for every seed first, then the ablation's pretrainings and
    # fine-tunings, so that a run cut short has the main comparison on every seed
    passes = [("clef", ["random", "clef"])]
    if args.ablation_labels:
        passes.append(("ablation", ["decoding", "decoding+disc"]))
    for name, arms in passes:
        for seed in args.seeds:
            for labels in args.labels:
                if name == "ablation" and labels not in args.ablation_labels:
                    continue
                for arm in arms:
                    key = f"{seed}/{arm}/{labels}"
                    if key in runs["finetuning"]:
                        continue
                    pre = None if arm == "random" else _pretraining(args, runs, seed, arm)
                    runs["finetuning"][key] = finetune(args, seed, arm, labels, pre)
                    print(f"{key}: Dice {runs['finetuning'][key]['dice']:.4f}", flush=True)
                    _save(args.runs_json, runs)


def _pretraining(args, runs: dict, seed: int, variant: str) -> dict:
    """The seed's pretraining of ``variant`` (run once, then reused by every fine-tuning of that seed)."""
    key = f"{seed}/pretrain/{variant}"
    if key not in runs["pretraining"] or not os.path.isfile(runs["pretraining"][key]["model"]):
        runs["pretraining"][key] = pretrain(args, seed, variant)
        _save(args.runs_json, runs)
    return runs["pretraining"][key]


def _fmt(values: list[float], digits: int = 3) -> str:
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def write_report(runs: dict, command: str) -> str:
    import monai
    import torch

    tune = list(runs["finetuning"].values())
    pre = list(runs["pretraining"].values())
    seeds = sorted({r["seed"] for r in tune})
    label_counts = sorted({r["labels"] for r in tune})
    meta = runs.get("meta", {})
    pre_seeds = sorted({p["seed"] for p in pre})
    lines = [
        "# CLEF quality on the synthetic CT (few labelled volumes): random init. vs CLEF, and the loss-term ablation",
        "",
        "Fine-tuning `train.json + demo.json` (32³, narrow U-Net, Dice + BCE per organ, Adam lr 3e-3 (demo), up to "
        f"{meta.get('finetune_epochs')} epochs with early stopping on the validation loss (patience 3), best model by "
        "validation loss; fold 0's training cases, a subset of the given size drawn with `subset_seed` = seed) from "
        "random initialisation or from a pretraining (`pretrain.json + demo_pretrain.json`, "
        f"{meta.get('pretrain_epochs')} epochs on the unlabelled pool, Adam 4e-4, batch 1) with the loss weights of "
        "the arm. Pretraining repeated for every seed: seed s pretrains every variant with seed s "
        f"(pretraining seeds {pre_seeds}, fine-tuning seeds {seeds})"
        + (
            "; within a seed every labelled count fine-tunes from the same pretrainings"
            if len(label_counts) > 1
            else ""
        )
        + ". Test: the demo datalist's testing volumes, never used for training or model "
        "selection (`evaluate.json`: Dice and NSD at the FLARE22 per-organ tolerances on each case's original grid; "
        "FLARE/MONAI convention: an organ predicted but absent from a case's ground truth scores 0).",
        "",
        f"- date: {meta.get('date')}; commit {meta.get('commit')}",
        f"- machine: `nproc` = {len(os.sched_getaffinity(0))}, no GPU (fp32); torch threads per run "
        f"{sorted({r.get('torch_threads') for r in tune + pre})}; runs side by side on a shared machine "
        f"(1-min load at the end of each run: {_fmt([r['load_average_1min'] for r in tune], 1)}), so wall times "
        "are indicative only",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}",
        f"- command: `{command}`",
        "- every run: `clef_quality_runs.json`",
        *[f"- note: {n}" for n in meta.get("notes", [])],
    ]
    reading = []
    for labels in label_counts:
        rows = [r for r in tune if r["labels"] == labels]
        by_arm = {a: {r["seed"]: r for r in rows if r["arm"] == a} for a in ARM_LABELS}
        lines += [
            "",
            f"## {labels} labelled training volumes",
            "",
            "| init | seeds | test mean Dice | test mean NSD (FLARE22 tolerances) | Δ Dice vs random (paired, mean ± "
            "std) | Wilcoxon p (Dice vs random) | best epoch | wall / run (min) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        rand = {s: r["dice"] for s, r in by_arm["random"].items()}
        for arm, label in ARM_LABELS.items():
            per = by_arm[arm]
            if not per:
                continue
            if arm == "random":
                delta = p = "—"
            else:
                ps = paired_summary(rand, {s: r["dice"] for s, r in per.items()})
                delta = f"{ps['mean']:+.3f} ± {ps['std']:.3f} (n={ps['n']})" if ps["n"] else "n/a"
                wp = ps.get("wilcoxon_p")
                p = f"{wp:.3f}" if wp is not None and wp == wp else "n/a"
                if ps["n"]:
                    reading.append(
                        paired_reading(
                            f"{label}, {labels} volumes", "random init.", ps, "test mean Dice", ".3f", "lower", "higher"
                        )
                    )
            lines.append(
                f"| {label} | {len(per)} | {_fmt([r['dice'] for r in per.values()])} | "
                f"{_fmt([r['nsd'] for r in per.values()])} | {delta} | {p} | "
                f"{_fmt([r['best_epoch'] for r in per.values()], 1)} | "
                f"{_fmt([r['wall_s'] / 60 for r in per.values()], 1)} |"
            )
        arms = [a for a in ARM_LABELS if by_arm[a]]
        lines += [
            "",
            "Per seed (test mean Dice):",
            "",
            "| seed | " + " | ".join(ARM_LABELS[a] for a in arms) + " |",
            "|---:|" + "---:|" * len(arms),
        ]
        for s in seeds:
            cells = [f"{by_arm[a][s]['dice']:.4f}" if s in by_arm[a] else "—" for a in arms]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "## Reading (written by this script from the paired differences above)", ""] + reading
    lines += [
        "",
        "## Pretraining runs",
        "",
        "| seed | variant | loss weights (decoding, discriminativeness, equivariance) | epochs | wall (min) |",
        "|---:|---|---|---:|---:|",
    ]
    for p in sorted(pre, key=lambda p: (p["seed"], p["variant"])):
        w = p["loss_weights"]
        lines.append(
            f"| {p['seed']} | {p['variant']} | {w['decoding']:g}, {w['discriminativeness']:g}, "
            f"{w['equivariance']:g} | {p['epochs']} | {p['wall_s'] / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--labels", type=int, nargs="+", default=[4, 10], help="labelled training volumes")
    ap.add_argument(
        "--ablation-labels", type=int, nargs="*", default=[4], help="labelled counts that also run the ablation"
    )
    ap.add_argument("--pretrain-epochs", type=int, default=4)
    ap.add_argument("--finetune-epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "monai_contrastive_bench_clef_quality"))
    ap.add_argument("--demo-dir", default=None)
    ap.add_argument("--runs-json", default=os.path.join(HERE, "results", "clef_quality_runs.json"))
    ap.add_argument("--merge", nargs="*", default=[], help="runs files to merge into --runs-json first")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--note", action="append", default=[], help="a line for the report (kept in the runs file)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "clef_quality.md"))
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.work_dir = os.path.abspath(args.work_dir)
    args.demo_dir = os.path.abspath(args.demo_dir or os.path.join(args.work_dir, "demo_data"))
    os.makedirs(args.work_dir, exist_ok=True)
    runs = {"meta": {}, "pretraining": {}, "finetuning": {}}
    for path in ([args.runs_json] if os.path.isfile(args.runs_json) else []) + list(args.merge):
        with open(path) as f:
            other = json.load(f)
        for part in ("pretraining", "finetuning"):
            runs[part].update(other.get(part, {}))
        runs["meta"] = {**other.get("meta", {}), **runs["meta"]}
        runs["meta"]["commands"] = sorted(set(runs["meta"].get("commands", []) + other["meta"].get("commands", [])))
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    runs["meta"]["notes"] = runs["meta"].get("notes", []) + [
        n for n in args.note if n not in runs["meta"].get("notes", [])
    ]
    if not args.report_only:
        runs["meta"].update(
            pretrain_epochs=args.pretrain_epochs,
            finetune_epochs=args.finetune_epochs,
            commit=_commit(),
            date=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
            load_at_start=machine_load(),
        )
        runs["meta"]["commands"] = sorted(set(runs["meta"].get("commands", []) + [command]))
        run_all(args, runs)
    _save(args.runs_json, runs)
    if runs["finetuning"]:
        text = write_report(runs, "; ".join(runs["meta"].get("commands", [command])))
        with open(args.out, "w") as f:
            f.write(text)
        print(text)


if __name__ == "__main__":
    main()

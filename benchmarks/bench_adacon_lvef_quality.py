"""Quality benchmark on the synthetic LVEF echo task: MSE vs MSE + AdaCon vs MSE + SupCon (AdaCon Table IX protocol).

Every run goes through the bundle's own configs (``bundles/adacon_lvef_echo/configs/train.json`` + ``demo.json``)
with overrides, in a subprocess: train on TRAIN, pick the best epoch by validation MSE on VAL, then score that
checkpoint on TEST (never used for training or selection) with ``evaluate.json``: one clip per video and all clips
averaged. Results: mean ± std over seeds (the seed sets initialisation, clip sampling and augmentation; the
synthetic dataset is the same for every run).

    python benchmarks/bench_adacon_lvef_quality.py --seeds 0 1 2 --out benchmarks/results/adacon_lvef_quality.md

Finished runs are cached in ``--work-dir`` (JSON per run), so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUNDLE = os.path.join(ROOT, "bundles", "adacon_lvef_echo")

VARIANTS = {
    "MSE (regression only)": {"gamma_con": 0.0},
    "MSE + AdaCon": {},
    "MSE + SupCon": {
        "contrastive_loss": {"_target_": "monai_contrastive.losses.SupConLoss", "scale": "@contrastive_scale"}
    },
}

RUN_SCRIPT = r"""
import json, os, sys, torch
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
from monai.bundle import ConfigWorkflow
args = json.loads(sys.argv[1])
root = args["bundle_root"]
cfg = lambda *f: [os.path.join(root, "configs", x) for x in f]
wf = ConfigWorkflow(config_file=cfg("train.json", "demo.json"), workflow_type="train", bundle_root=root,
                    **args["overrides"])
wf.initialize(); wf.run()
best = torch.load(os.path.join(root, "models", "model.pt"), map_location="cpu", weights_only=True)
wf.finalize()
wf = ConfigWorkflow(config_file=cfg("train.json", "demo.json", "evaluate.json"), workflow_type="eval",
                    bundle_root=root, **args["overrides"])
wf.initialize(); wf.run(); wf.finalize()
m = json.load(open(os.path.join(root, "eval", "test_metrics.json")))
out = {name: proto["all"] for name, proto in m["protocols"].items()}
out["best_val_mse"], out["best_epoch"] = best["metric"], best["epoch"]
json.dump(out, open(args["result"], "w"))
"""


def _tag(variant: str, seed: int) -> str:
    return f"{variant.replace(' ', '_').replace('(', '').replace(')', '').replace('+', 'plus')}_seed{seed}"


def run_one(variant: str, seed: int, args, work_dir: str) -> dict:
    tag = _tag(variant, seed)
    result = os.path.join(work_dir, tag + ".json")
    if os.path.isfile(result):
        with open(result) as f:
            return json.load(f)
    root = os.path.join(work_dir, tag)
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", ".cache"))
    overrides = {
        "seed": seed,
        "num_workers": args.workers,
        "demo_dir": args.demo_dir,
        "video_cache_dir": os.path.join(args.work_dir, "video_cache"),
        "train#log_handlers#0": {"_target_": "monai.handlers.StatsHandler", "iteration_log": False},
        **json.loads(args.overrides),
        **VARIANTS[variant],
    }
    payload = {"bundle_root": root, "overrides": overrides, "result": result}
    t0 = time.time()
    env = dict(os.environ, BENCH_THREADS=str(args.threads))
    proc = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT, json.dumps(payload)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tag} failed:\n{proc.stderr[-4000:]}")
    with open(result) as f:
        m = json.load(f)
    m["seconds"] = time.time() - t0
    with open(result, "w") as f:
        json.dump(m, f)
    shutil.rmtree(root, ignore_errors=True)
    print(f"{tag}: {json.dumps(m)}", flush=True)
    return m


def _ms(vals):
    t = torch.tensor(vals, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if t.numel() > 1 else 0.0


def _mean_predictor(demo_dir: str, demo_kwargs: dict) -> dict | None:
    """MAE / RMSE / R² on TEST of the constant prediction "mean TRAIN EF" (the floor any model must beat)."""
    from monai_contrastive.data import generate_echo_demo, load_echonet_filelist
    from monai_contrastive.handlers import regression_metrics

    try:
        root = generate_echo_demo(demo_dir, **demo_kwargs)
    except (OSError, ValueError):
        return None
    train = [x["label"] for x in load_echonet_filelist(root, "TRAIN", check_files=False)]
    test = [x["label"] for x in load_echonet_filelist(root, "TEST", check_files=False)]
    mean = sum(train) / len(train)
    return regression_metrics([mean] * len(test), test) | {"n": len(test)}


def write_report(results: dict[str, list[dict]], args) -> None:
    with open(os.path.join(BUNDLE, "configs", "demo.json")) as f:
        demo = json.load(f)
    demo.update(json.loads(args.overrides))
    base_name = "MSE (regression only)"
    lines = [
        "# AdaCon on the synthetic LVEF echo task: quality",
        "",
        f"- date: {datetime.date.today()}; machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU "
        f"cores, GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}",
        f"- python {platform.python_version()}, torch {torch.__version__}, monai {__import__('monai').__version__}",
        f"- command: `python benchmarks/bench_adacon_lvef_quality.py {' '.join(sys.argv[1:])}`",
        "- setting: the bundle's `train.json` + `demo.json` (R(2+1)D-18 from scratch, SGD momentum 0.9, MSE, "
        "gamma_con 0.75, s = 150, 2 clips per video, frame jitter 12 px, precise BN) with these demo values: "
        + ", ".join(f"`{k}`={v}" for k, v in demo.items())
        + "; best epoch by validation MSE on VAL; **metrics on TEST** (never trained on or used for selection), "
        "MAE/RMSE in EF percentage points.",
        "",
    ]
    for proto in ("all clips", "single clip"):
        base = _ms([r[proto]["mae"] for r in results[base_name]])[0] if base_name in results else None
        lines += [
            f"## TEST, {proto}" + (" (averaged over the clips of each video)" if proto == "all clips" else ""),
            "",
            "| method | MAE ↓ | RMSE ↓ | R² ↑ | ΔMAE vs MSE | seeds | minutes/run |",
            "|---|---|---|---|---|---|---|",
        ]
        for variant, rs in results.items():
            mae, rmse, r2 = (_ms([r[proto][k] for r in rs]) for k in ("mae", "rmse", "r2"))
            delta = f"{100 * (mae[0] - base) / base:+.1f} %" if base else ""
            mins = sum(r.get("seconds", 0) for r in rs) / len(rs) / 60
            lines.append(
                f"| {variant} | {mae[0]:.2f} ± {mae[1]:.2f} | {rmse[0]:.2f} ± {rmse[1]:.2f} | "
                f"{r2[0]:.3f} ± {r2[1]:.3f} | {delta} | {len(rs)} | {mins:.1f} |"
            )
        lines.append("")
    mean_pred = _mean_predictor(args.demo_dir, demo.get("demo_kwargs", {}))
    if mean_pred:
        lines += [
            f"For scale: predicting the TRAIN mean EF for every TEST video gives MAE {mean_pred['mae']:.2f}, RMSE "
            f"{mean_pred['rmse']:.2f}, R² {mean_pred['r2']:.3f} (n = {mean_pred['n']}).",
            "",
        ]
    lines += ["Per run (TEST MAE all clips / single clip; best epoch):", ""]
    for variant, rs in results.items():
        lines.append(
            f"- {variant}: "
            + ", ".join(
                f"{r['all clips']['mae']:.2f} / {r['single clip']['mae']:.2f} (ep {r['best_epoch']})" for r in rs
            )
        )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--overrides", default="{}", help="JSON of extra config overrides for every run")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work-dir", default=os.path.join(ROOT, ".cache", "bench_lvef_quality"))
    ap.add_argument("--demo-dir", default=os.path.join(ROOT, ".cache", "lvef_demo_data"))
    ap.add_argument("--report-only", action="store_true", help="aggregate the finished runs in --work-dir, run none")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "adacon_lvef_quality.md"))
    args = ap.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:  # seeds outermost: an interrupted run still has every method for the first seeds
        for variant in args.variants:
            if args.report_only:
                path = os.path.join(args.work_dir, _tag(variant, seed) + ".json")
                if os.path.isfile(path):
                    with open(path) as f:
                        results.setdefault(variant, []).append(json.load(f))
                continue
            results.setdefault(variant, []).append(run_one(variant, seed, args, args.work_dir))
    write_report(results, args)


if __name__ == "__main__":
    main()

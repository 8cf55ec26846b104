"""Supervised baseline of the lrc_multiorgan_ct bundle on its synthetic CT demo data ("Random init." of Table 4.2).

Every run goes through the bundle's own configs, in a subprocess, on a copy of the bundle in ``--work-dir``:
``train.json + demo.json`` (the demo recipe: 40 epochs, Adam lr 1e-3, patch 96, batch 2 volumes x 4 slices,
validation every 10 epochs, best checkpoint by validation mean Dice) from random initialisation with
``num_train_volumes`` = 10 and 20 (all training volumes of the demo datalist), ``seed`` = ``subset_seed`` = s, then
``train.json + demo.json + evaluate.json`` on the datalist's ``testing`` list (5 volumes never used for training or
model selection). All runs read one demo dataset (``generate_ct_demo`` defaults, generated once into
``--work-dir``). Results: per run and mean ± std over seeds.

    python benchmarks/bench_lrc_baseline.py --seeds 0 1 2 --volumes 10 20 \
        --out benchmarks/results/lrc_multiorgan_ct_baseline.md

Finished runs are cached in ``--work-dir`` (one JSON per run, skipped when present), so an interrupted benchmark
continues where it stopped; ``--report-only`` aggregates the finished runs and runs none.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import monai
import torch

from monai_contrastive.data.ct_labels import FLARE22_ORGANS
from monai_contrastive.data.synthetic_ct import generate_ct_demo

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUNDLE = os.path.join(ROOT, "bundles", "lrc_multiorgan_ct")

RUN_SCRIPT = r"""
import json, os, sys, time, torch
from monai.bundle import ConfigWorkflow
args = json.loads(sys.argv[1])
if args["threads"]:
    torch.set_num_threads(args["threads"])
root = args["bundle_root"]
conf = os.path.join(root, "configs")
common = dict(meta_file=os.path.join(conf, "metadata.json"), logging_file=os.path.join(conf, "logging.conf"))
t0 = time.perf_counter()
wf = ConfigWorkflow(config_file=[os.path.join(conf, f) for f in ("train.json", "demo.json")], workflow_type="train",
                    bundle_root=root, **common, **args["overrides"])
wf.initialize()
t_init = time.perf_counter()
wf.run()
trainer = wf.parser.get_parsed_content("train#trainer")
iterations, epochs = int(trainer.state.iteration), int(trainer.state.epoch)
n_train = len(wf.parser.get_parsed_content("train_items"))
wf.finalize()
t1 = time.perf_counter()
ev = ConfigWorkflow(config_file=[os.path.join(conf, f) for f in ("train.json", "demo.json", "evaluate.json")],
                    workflow_type=None, bundle_root=root, **common, **args["overrides"])
ev.initialize(); ev.run(); ev.finalize()
t2 = time.perf_counter()
with open(os.path.join(root, "models", "model.pt.json")) as f:
    best = json.load(f)
with open(os.path.join(root, "eval", "seg_metrics.json")) as f:
    seg = json.load(f)
json.dump({"iterations": iterations, "epochs": epochs, "n_train_volumes": n_train, "best": best,
           "seg_metrics": seg, "setup_s": t_init - t0, "train_s": t1 - t0, "eval_s": t2 - t1,
           "torch_threads": torch.get_num_threads()}, open(args["result"], "w"))
"""


def _tag(volumes: int, seed: int) -> str:
    return f"vol{volumes}_seed{seed}"


def run_one(volumes: int, seed: int, args) -> dict:
    result = os.path.join(args.work_dir, _tag(volumes, seed) + ".json")
    if os.path.isfile(result):
        with open(result) as f:
            return json.load(f)
    root = os.path.join(args.work_dir, _tag(volumes, seed))
    shutil.rmtree(root, ignore_errors=True)  # a run killed half-way is redone from scratch (clean wall time)
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data"))
    overrides = {
        "dataset_dir": "",
        "demo_dir": args.demo_dir,
        "seed": seed,
        "subset_seed": seed,
        "num_train_volumes": volumes,
    }
    if args.epochs is not None:  # smoke tests only; the report states the epochs actually run
        overrides.update(epochs=args.epochs, val_interval=min(args.epochs, 10))
    payload = {"bundle_root": root, "overrides": overrides, "result": result + ".part", "threads": args.threads}
    log = os.path.join(args.work_dir, _tag(volumes, seed) + ".log")
    print(f"{_tag(volumes, seed)}: running (log {log})", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(
            [sys.executable, "-c", RUN_SCRIPT, json.dumps(payload)], stdout=f, stderr=subprocess.STDOUT
        )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        with open(log) as f:
            raise RuntimeError(f"{_tag(volumes, seed)} failed (rc {proc.returncode}):\n{f.read()[-4000:]}")
    with open(result + ".part") as f:
        m = json.load(f)
    m.update(volumes=volumes, seed=seed, wall_s=wall, finished=datetime.now(timezone.utc).isoformat())
    with open(result, "w") as f:
        json.dump(m, f)
    os.remove(result + ".part")
    shutil.rmtree(root, ignore_errors=True)
    print(
        f"{_tag(volumes, seed)}: test Dice {m['seg_metrics']['overall']['dice']['mean']:.4f}, NSD "
        f"{m['seg_metrics']['overall']['nsd']['mean']:.4f}, best val Dice {m['best']['metric']:.4f} (epoch "
        f"{m['best']['epoch']}), {m['iterations']} iterations, {wall / 60:.1f} min",
        flush=True,
    )
    return m


def _ms(vals: list[float]) -> tuple[float, float]:
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def _fmt(vals: list[float], digits: int = 3) -> str:
    m, s = _ms(vals)
    return "n/a" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_report(results: dict[int, list[dict]], missing: list[str], args, command: str, load: float) -> str:
    organs = list(FLARE22_ORGANS)
    all_runs = [r for rs in results.values() for r in rs]
    threads = sorted({r.get("torch_threads") for r in all_runs})
    epochs = sorted({r["epochs"] for r in all_runs})
    lines = [
        "# lrc_multiorgan_ct: supervised baseline (random initialisation) on the synthetic CT demo data",
        "",
        'The "Random init." row of the thesis\'s Table 4.2, at demo scale: `configs/train.json` + `configs/demo.json`',
        f"(the demo recipe: {'/'.join(map(str, epochs)) or 40} epochs, Adam lr 1e-3, weight decay 1e-4, Dice loss, "
        "patch 96, batch 2 volumes x 4 slices, validation every 10 epochs on the 5 validation volumes, best checkpoint "
        "by validation mean Dice) from random initialisation, `num_train_volumes` = "
        f"{' or '.join(str(v) for v in sorted(results))} (20 = all training volumes of the demo datalist), "
        "`seed` = `subset_seed` = s; then `configs/evaluate.json` (per-organ Dice and NSD at "
        "the FLARE22 per-organ tolerances on each case's original grid) on the datalist's `testing` list: **5 "
        "volumes never used for training or model selection**. Every run goes through the bundle's configs with "
        "`monai.bundle.ConfigWorkflow` on a copy of the bundle, in a subprocess; all runs read one demo dataset "
        "(`generate_ct_demo` defaults: seed 0, matrix 128, 20 training / 5 validation / 5 testing labelled volumes).",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: `nproc` = {len(os.sched_getaffinity(0))}, CPU model `{_cpu_model()}` (from /proc/cpuinfo), "
        f"no GPU (CPU, fp32); torch threads {', '.join(map(str, threads))} (per run below); DataLoader num_workers 2 "
        "(demo.json)",
        f"- other load: the machine is shared with other jobs (1-min load average {load:.2f} when this report was "
        "written), so wall times are indicative only",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}",
        f"- command: `{command}`",
        "",
        "## Summary (mean ± std over seeds)",
        "",
        "Mean Dice / NSD: mean over the 5 test cases of each case's mean over its organs (FLARE/MONAI convention: an "
        "organ predicted but absent from the case's ground truth scores 0, one absent from both is left out), then "
        "mean ± std over seeds. Best validation Dice: MONAI `MeanDice` (13 organs) of the selected checkpoint on the "
        "validation volumes.",
        "",
        "| training volumes | seeds | test mean Dice | test mean NSD (FLARE22 tolerances) | best val Dice | "
        "best epoch | iterations | wall time / run (min) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for vol, rs in sorted(results.items()):
        if not rs:
            continue
        lines.append(
            f"| {vol} | {len(rs)} | {_fmt([r['seg_metrics']['overall']['dice']['mean'] for r in rs])} | "
            f"{_fmt([r['seg_metrics']['overall']['nsd']['mean'] for r in rs])} | "
            f"{_fmt([r['best']['metric'] for r in rs])} | {_fmt([r['best']['epoch'] for r in rs], 1)} | "
            f"{_fmt([r['iterations'] for r in rs], 0)} | {_fmt([r['wall_s'] / 60 for r in rs], 1)} |"
        )
    lines += [
        "",
        "## Per run",
        "",
        "| training volumes | seed | test mean Dice | test mean NSD | best val Dice | best epoch | iterations | "
        "train (min) | evaluate (s) | wall time (min) | torch threads | finished (UTC) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for vol, rs in sorted(results.items()):
        for r in rs:
            o = r["seg_metrics"]["overall"]
            lines.append(
                f"| {vol} | {r['seed']} | {o['dice']['mean']:.4f} | {o['nsd']['mean']:.4f} | "
                f"{r['best']['metric']:.4f} | {r['best']['epoch']} | {r['iterations']} | {r['train_s'] / 60:.1f} | "
                f"{r['eval_s']:.0f} | {r['wall_s'] / 60:.1f} | {r.get('torch_threads')} | "
                f"{r['finished'][:16].replace('T', ' ')} |"
            )
    if missing:
        lines += ["", "Runs that did not finish (no result): " + ", ".join(missing) + "."]
    vols = [v for v in sorted(results) if results[v]]
    lines += [
        "",
        "## Per-organ test Dice (mean ± std over seeds of each run's mean over the test cases where the organ is "
        "present)",
        "",
        "| organ | " + " | ".join(f"{v} volumes" for v in vols) + " |",
        "|---|" + "---:|" * len(vols),
    ]
    for organ in organs:
        cells = [_fmt([r["seg_metrics"]["organs"][organ]["dice"]["mean"] for r in results[v]]) for v in vols]
        lines.append(f"| {organ} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Per-organ test NSD (FLARE22 tolerances)",
        "",
        "| organ | " + " | ".join(f"{v} volumes" for v in vols) + " |",
        "|---|" + "---:|" * len(vols),
    ]
    for organ in organs:
        cells = [_fmt([r["seg_metrics"]["organs"][organ]["nsd"]["mean"] for r in results[v]]) for v in vols]
        lines.append(f"| {organ} | " + " | ".join(cells) + " |")
    if args.reading and os.path.isfile(args.reading):
        with open(args.reading) as f:
            lines += ["", f.read().rstrip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--volumes", type=int, nargs="+", default=[10, 20], help="num_train_volumes values")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads of each run (default: torch's default, the cores)"
    )
    ap.add_argument("--epochs", type=int, default=None, help="override demo.json's epochs (smoke tests only)")
    ap.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "monai_contrastive_bench_lrc_baseline"))
    ap.add_argument("--demo-dir", default=None, help="demo data folder (default: <work-dir>/demo_data)")
    ap.add_argument("--report-only", action="store_true", help="aggregate the finished runs in --work-dir, run none")
    ap.add_argument("--reading", default=None, help="a Markdown file appended to the report (the written reading)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "lrc_multiorgan_ct_baseline.md"))
    args = ap.parse_args()
    args.work_dir = os.path.abspath(args.work_dir)
    args.demo_dir = os.path.abspath(args.demo_dir or os.path.join(args.work_dir, "demo_data"))
    os.makedirs(args.work_dir, exist_ok=True)
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    if not args.report_only:
        generate_ct_demo(args.demo_dir)  # the bundle's default demo data (what resolve_datalist generates)
    results: dict[int, list[dict]] = {v: [] for v in args.volumes}
    missing = []
    for seed in args.seeds:  # seeds outermost: a time-limited benchmark finishes whole seeds of both settings first
        for vol in args.volumes:
            path = os.path.join(args.work_dir, _tag(vol, seed) + ".json")
            if args.report_only:
                if os.path.isfile(path):
                    with open(path) as f:
                        results[vol].append(json.load(f))
                else:
                    missing.append(f"{vol} volumes seed {seed}")
                continue
            results[vol].append(run_one(vol, seed, args))
    for rs in results.values():
        rs.sort(key=lambda r: r["seed"])
    report = write_report(results, missing, args, command, os.getloadavg()[0])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(report)
    print(report)


if __name__ == "__main__":
    main()

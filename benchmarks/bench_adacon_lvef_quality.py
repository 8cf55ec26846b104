"""Quality benchmark on the synthetic LVEF echo task: MSE vs MSE + AdaCon vs MSE + SupCon (AdaCon Table III protocol).

Every run goes through the bundle's own configs (``bundles/adacon_lvef_echo/configs/train.json`` + ``demo.json``)
with overrides, in a subprocess: train on TRAIN, pick the best epoch by validation MSE on VAL, then score that
checkpoint on TEST (never used for training or selection) with ``evaluate.json``: one clip per video and all clips
averaged. Paired design: every method runs with the same seeds on the same synthetic dataset (the seed sets
initialisation, clip sampling and augmentation), so the per-seed differences and a Wilcoxon signed-rank test compare
AdaCon with the plain loss. Fig. 3 check: the Spearman correlation of cosine similarity vs ECDF label distance of the
best checkpoint's VAL features (backbone features, and the projection head's embeddings) per run.

    python benchmarks/bench_adacon_lvef_quality.py --seeds 0 1 2 3 4 5 6 7 --workers 0 \
        --work-dir .cache/bench_lvef_quality_i11

Finished runs are cached in ``--work-dir`` (JSON per run), so an interrupted benchmark continues where it stopped;
the report and ``<out>.json`` (every finished run) are rewritten after each run, so partial results are kept.
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
sys.path.insert(0, HERE)
from paired_stats import machine_load, mean_std, paired_reading, paired_summary  # noqa: E402

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
# Fig. 3 check on VAL with the best checkpoint (its own ECDF, never refitted)
sys.path.insert(0, args["bench_dir"])
from paired_stats import feature_label_spearman
from monai.data import DataLoader
p = wf.parser
net = p.get_parsed_content("network_def")
net.load_state_dict(best["model"]); net.eval()
ecdf = p.get_parsed_content("ecdf"); ecdf.load_state_dict(best["ecdf"])
feats, embs, labels = [], [], []
with torch.no_grad():
    for b in DataLoader(p.get_parsed_content("validate#dataset"), batch_size=10, num_workers=0):
        o = net(torch.as_tensor(b["image"]))
        feats.append(o["features"]); embs.append(o["embedding"]); labels.append(torch.as_tensor(b["label"]).reshape(-1))
feats, embs, labels = torch.cat(feats), torch.cat(embs), torch.cat(labels)
fig3 = {"spearman_features": feature_label_spearman(feats, labels, ecdf),
        "spearman_embedding": feature_label_spearman(embs, labels, ecdf), "n_val": int(labels.numel())}
wf.finalize()
wf = ConfigWorkflow(config_file=cfg("train.json", "demo.json", "evaluate.json"), workflow_type="eval",
                    bundle_root=root, **args["overrides"])
wf.initialize(); wf.run(); wf.finalize()
m = json.load(open(os.path.join(root, "eval", "test_metrics.json")))
out = {name: proto["all"] for name, proto in m["protocols"].items()}
out["best_val_mse"], out["best_epoch"] = best["metric"], best["epoch"]
out.update(fig3)
json.dump(out, open(args["result"], "w"))
"""


def _tag(variant: str, seed: int) -> str:
    return f"{variant.replace(' ', '_').replace('(', '').replace(')', '').replace('+', 'plus')}_seed{seed}"


def run_one(variant: str, seed: int, args, work_dir: str) -> dict | None:
    tag = _tag(variant, seed)
    result = os.path.join(work_dir, tag + ".json")
    if os.path.isfile(result):
        with open(result) as f:
            return json.load(f)
    # a lock per run: several processes may share --work-dir (e.g. odd and even seeds side by side)
    lock = os.path.join(work_dir, tag + ".lock")
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        print(f"{tag}: running in another process ({lock}); skipped", flush=True)
        return None
    root = os.path.join(work_dir, tag)
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", ".cache"))
    overrides = {
        "seed": seed,
        "num_workers": args.workers,
        "demo_dir": args.demo_dir,
        "video_cache_dir": os.path.join(args.work_dir, "video_cache"),
        **json.loads(args.overrides),
        **VARIANTS[variant],
    }
    payload = {"bundle_root": root, "overrides": overrides, "result": result, "bench_dir": HERE}
    t0 = time.time()
    env = dict(os.environ, BENCH_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT, json.dumps(payload)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        os.remove(lock)
        raise RuntimeError(f"{tag} failed:\n{proc.stderr[-4000:]}")
    with open(result) as f:
        m = json.load(f)
    m["seconds"] = time.time() - t0
    m["load_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with open(result, "w") as f:
        json.dump(m, f)
    shutil.rmtree(root, ignore_errors=True)
    os.remove(lock)
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


BASE = "MSE (regression only)"


def _ci(ps: dict, fmt: str) -> str:
    return f"[{ps['ci95'][0]:{fmt}}, {ps['ci95'][1]:{fmt}}]" if "ci95" in ps else "n/a"


def _fmt_p(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and x != x) else f"{x:.3f}"


def write_report(results: dict[str, dict[int, dict]], args, started: float, final: bool) -> None:
    """``results[variant][seed]`` = the run's metrics; rewrites ``args.out`` (markdown) and ``args.out + .json``."""
    with open(os.path.join(BUNDLE, "configs", "demo.json")) as f:
        demo = json.load(f)
    demo.update(json.loads(args.overrides))
    demo.pop("_comment", None)
    for k in ("run#1", "heldout_test_items", "demo_r2_target"):
        demo.pop(k, None)
    complete = sorted(set.intersection(*(set(r) for r in results.values()))) if results else []
    status = (
        f"finished: {len(complete)} paired seeds ({complete})"
        if final
        else f"**partial** (benchmark still running or stopped): {len(complete)} seeds have every method ({complete})"
    )
    lines = [
        "# AdaCon on the synthetic LVEF echo task: quality (paired seeds)",
        "",
        f"- status: {status}; wall time of the finished runs, summed: "
        f"{sum(r.get('seconds', 0) for rs in results.values() for r in rs.values()) / 60:.0f} min "
        "(several runs ran side by side)",
        (
            f"- date: {datetime.date.today()}; machine: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPU cores, GPU: {_gpu_name()}; {machine_load()} (the 2 cores were shared with other "
            "jobs: minutes/run are under load, not idle timings)"
            if not getattr(args, "from_runs_json", None)
            else f"- this report was rewritten on {datetime.date.today()} from "
            f"`{os.path.relpath(args.from_runs_json, ROOT)}` (no run made now: the minutes below are those of the "
            "original runs, see the notes at the end and `git log` of that file)"
        ),
        f"- python {platform.python_version()}, torch {torch.__version__}, monai {__import__('monai').__version__}",
        f"- command: `python benchmarks/bench_adacon_lvef_quality.py {' '.join(sys.argv[1:])}`",
        f"- {args.threads} torch thread(s) per run, runs one after another in this process",
        "- setting: the bundle's `train.json` + `demo.json` (the demo's small frame-pooling backbone "
        "`FramePoolVideoNet`, not the paper's R(2+1)D-18; SGD momentum 0.9, MSE on EF %, gamma_con 0.75, s = 150, "
        "2 clips per video, frame jitter 12 px, precise BN) with: "
        + ", ".join(f"`{k}`={json.dumps(v)}" for k, v in demo.items())
        + "; the same synthetic dataset and the same seeds for every method (paired); best epoch by validation "
        "MSE on VAL; **metrics on TEST** (never trained on or used for selection), MAE/RMSE in EF percentage points.",
        "",
    ]
    base_runs = results.get(BASE, {})
    for proto in ("all clips", "single clip"):
        base = mean_std([r[proto]["mae"] for s, r in base_runs.items() if s in complete])[0] if base_runs else None
        lines += [
            f"## TEST, {proto}" + (" (averaged over the clips of each video)" if proto == "all clips" else ""),
            "",
            "Over the seeds where every method finished.",
            "",
            "| method | MAE ↓ | RMSE ↓ | R² ↑ | ΔMAE vs MSE | seeds | minutes/run |",
            "|---|---|---|---|---|---|---|",
        ]
        for variant, runs in results.items():
            rs = [runs[s] for s in complete]
            if not rs:
                continue
            mae, rmse, r2 = (mean_std([r[proto][k] for r in rs]) for k in ("mae", "rmse", "r2"))
            delta = f"{100 * (mae[0] - base) / base:+.1f} %" if base else ""
            mins = sum(r.get("seconds", 0) for r in rs) / len(rs) / 60
            lines.append(
                f"| {variant} | {mae[0]:.2f} ± {mae[1]:.2f} | {rmse[0]:.2f} ± {rmse[1]:.2f} | "
                f"{r2[0]:.3f} ± {r2[1]:.3f} | {delta} | {len(rs)} | {mins:.1f} |"
            )
        lines.append("")
        lines += [
            f"Paired differences vs {BASE} (TEST MAE, {proto}; negative = lower MAE than MSE alone):",
            "",
            "| method | per-seed ΔMAE (seed: value) | mean ± std | 95 % CI | lower in | Wilcoxon p (exact, two-sided) "
            "| paired t p |",
            "|---|---|---|---|---|---|---|",
        ]
        for variant, runs in results.items():
            if variant == BASE or not base_runs:
                continue
            ps = paired_summary(
                {s: r[proto]["mae"] for s, r in base_runs.items()}, {s: r[proto]["mae"] for s, r in runs.items()}
            )
            if not ps["n"]:
                continue
            per = ", ".join(f"{s}: {d:+.2f}" for s, d in zip(ps["seeds"], ps["diffs"]))
            lines.append(
                f"| {variant} | {per} | {ps['mean']:+.2f} ± {ps['std']:.2f} | {_ci(ps, '.2f')} | "
                f"{ps['lower_in']}/{ps['n']} | "
                f"{_fmt_p(ps.get('wilcoxon_p'))} (min possible {ps['min_possible_p']:.3f}) | "
                f"{_fmt_p(ps.get('ttest_p'))} |"
            )
        lines.append("")
    mean_pred = _mean_predictor(args.demo_dir, demo.get("demo_kwargs", {}))
    if mean_pred:
        lines += [
            f"For scale: predicting the TRAIN mean EF for every TEST video gives MAE {mean_pred['mae']:.2f}, RMSE "
            f"{mean_pred['rmse']:.2f}, R² {mean_pred['r2']:.3f} (n = {mean_pred['n']}).",
            "",
        ]
    lines += [
        "## Fig. 3 check: is the feature space ordered by EF?",
        "",
        "Spearman rho between the cosine similarity of two VAL videos' features and the distance of their EF after the "
        "training ECDF, over every pair (AdaCon Fig. 3e-h; more negative = more ordered), for the best checkpoint of "
        "each run. `features`: the backbone's features (every method has them); `embedding`: the projection head's "
        "output (trained by the contrastive loss; untrained for MSE alone).",
        "",
        "| method | rho features: mean ± std | per seed | rho embedding: mean ± std | per seed |",
        "|---|---|---|---|---|",
    ]
    for variant, runs in results.items():
        fs = {s: r.get("spearman_features") for s, r in sorted(runs.items())}
        es = {s: r.get("spearman_embedding") for s, r in sorted(runs.items())}
        if not any(v is not None for v in fs.values()):
            continue
        f_ms, e_ms = mean_std(list(fs.values())), mean_std(list(es.values()))
        lines.append(
            f"| {variant} | {f_ms[0]:+.3f} ± {f_ms[1]:.3f} | "
            + ", ".join(f"{s}: {v:+.3f}" for s, v in fs.items() if v is not None)
            + f" | {e_ms[0]:+.3f} ± {e_ms[1]:.3f} | "
            + ", ".join(f"{s}: {v:+.3f}" for s, v in es.items() if v is not None)
            + " |"
        )
    base_rho = {s: r.get("spearman_features") for s, r in results.get(BASE, {}).items()}
    lines += ["", f"Paired vs {BASE} (rho of the features, seeds both have; negative = more ordered):", ""]
    for variant, runs in results.items():
        if variant == BASE:
            continue
        ps = paired_summary(base_rho, {s: r.get("spearman_features") for s, r in runs.items()})
        if ps["n"]:
            lines.append(
                f"- {variant}: Δrho {ps['mean']:+.3f} ± {ps['std']:.3f} (95 % CI {_ci(ps, '.3f')}), more ordered in "
                f"{ps['lower_in']}/{ps['n']} seeds, Wilcoxon p {_fmt_p(ps.get('wilcoxon_p'))}"
            )
    lines += ["", "Per run (seed: TEST MAE all clips / single clip, best epoch, minutes):", ""]
    for variant, runs in results.items():
        lines.append(
            f"- {variant}: "
            + "; ".join(
                f"{s}: {r['all clips']['mae']:.2f} / {r['single clip']['mae']:.2f} (ep {r['best_epoch']}, "
                f"{r.get('seconds', 0) / 60:.1f} min)"
                for s, r in sorted(runs.items())
            )
        )
    lines += ["", "## Reading (written by this script from the tables above)", ""]
    lines += _reading(results, complete, mean_pred)
    notes = os.path.join(HERE, "results", "adacon_lvef_quality_reading.md")
    if os.path.isfile(notes) and os.path.abspath(args.out) == os.path.join(HERE, "results", "adacon_lvef_quality.md"):
        with open(notes) as f:  # how the committed runs were made and their scope: words only, no figures
            lines += ["", f.read().strip()]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    runs_json = os.path.splitext(args.out)[0] + "_runs.json"
    source = getattr(args, "from_runs_json", None)
    if not (source and os.path.abspath(source) == os.path.abspath(runs_json)):  # never shrink the stored runs
        with open(runs_json, "w") as f:
            json.dump({v: {str(s): r for s, r in runs.items()} for v, runs in results.items()}, f, indent=1)
    print("\n".join(lines), flush=True)


def _gpu_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def _reading(results: dict[str, dict[int, dict]], complete: list[int], mean_pred: dict | None) -> list[str]:
    """The reading of the tables, written from the same numbers: does each method learn EF, its paired TEST MAE
    difference against MSE alone (both protocols), and the Fig. 3 check."""
    out = []
    r2 = {v: mean_std([runs[s]["all clips"]["r2"] for s in complete])[0] for v, runs in results.items() if complete}
    if r2:
        floor = f" (the TRAIN-mean predictor: MAE {mean_pred['mae']:.2f})" if mean_pred else ""
        out.append(
            f"- Every method learns EF{floor}: mean TEST R² (all clips) between {min(r2.values()):.3f} and "
            f"{max(r2.values()):.3f} over {len(complete)} paired seeds."
        )
    base_runs = results.get(BASE, {})
    for variant, runs in results.items():
        if variant == BASE or not base_runs:
            continue
        for proto in ("all clips", "single clip"):
            ps = paired_summary(
                {s: r[proto]["mae"] for s, r in base_runs.items()}, {s: r[proto]["mae"] for s, r in runs.items()}
            )
            if ps["n"]:
                out.append(
                    paired_reading(
                        variant, BASE, ps, f"TEST MAE ({proto}, EF points)", ".2f", "lower MAE", "higher MAE"
                    )
                )
        ps = paired_summary(
            {s: r.get("spearman_features") for s, r in base_runs.items()},
            {s: r.get("spearman_features") for s, r in runs.items()},
        )
        if ps["n"]:
            out.append(
                paired_reading(
                    variant, BASE, ps, "Fig. 3 Spearman rho of the features", ".3f", "more ordered", "less ordered"
                )
            )
    out.append(
        "- The paper (Tables VIII/IX) reports AdaCon 0.24 EF points lower MAE than MSE alone on EchoNet-Dynamic."
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--overrides", default="{}", help="JSON of extra config overrides for every run")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work-dir", default=os.path.join(ROOT, ".cache", "bench_lvef_quality"))
    ap.add_argument("--demo-dir", default=os.path.join(ROOT, ".cache", "lvef_demo_data"))
    ap.add_argument("--report-only", action="store_true", help="aggregate the finished runs in --work-dir, run none")
    ap.add_argument(
        "--from-runs-json",
        default=None,
        help="with --report-only: rewrite the report from a committed <out>_runs.json instead of --work-dir",
    )
    ap.add_argument("--out", default=os.path.join(HERE, "results", "adacon_lvef_quality.md"))
    args = ap.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    started = time.time()
    for seed in args.seeds:  # seeds outermost: an interrupted run still has every method for the first seeds
        for variant in args.variants:
            if not args.report_only:
                run_one(variant, seed, args, args.work_dir)
                write_report(_finished(args), args, started, final=False)
    results = _finished(args)
    if args.report_only and args.from_runs_json:
        with open(args.from_runs_json) as f:
            stored = {v: {int(s): r for s, r in runs.items()} for v, runs in json.load(f).items() if v in args.variants}
        results = {v: {s: r for s, r in runs.items() if s in args.seeds} for v, runs in stored.items()}
    write_report(results, args, started, final=all(set(args.seeds) <= set(r) for r in results.values()))


def _finished(args) -> dict[str, dict[int, dict]]:
    """Every finished run in ``--work-dir`` (also those of another process running other seeds there)."""
    results: dict[str, dict[int, dict]] = {v: {} for v in args.variants}
    for variant in args.variants:
        prefix = _tag(variant, 0)[: -len("0")]
        for name in os.listdir(args.work_dir):
            if name.startswith(prefix) and name.endswith(".json") and name[len(prefix) : -5].isdigit():
                with open(os.path.join(args.work_dir, name)) as f:
                    results[variant][int(name[len(prefix) : -5])] = json.load(f)
    return results


if __name__ == "__main__":
    main()

"""Quality benchmark of AdaCon vs. its baselines on the synthetic BMD demo task (AdaCon Tables II, III, V protocol).

Every run goes through the bundle's own configs (``bundles/adacon_bmd_xray/configs/train.json`` + ``demo.json``,
two-stage also ``pretrain.json`` / ``finetune.json``) with overrides, in a subprocess. Seed s trains fold s mod 4 of
the patient-grouped 4-fold split; the checkpoint with the best validation MAE on that held-out fold is then scored on
the datalist's separate ``testing`` patients (never used for training or model selection). Paired design: every
method runs with the same seeds (fold, initialisation, augmentation draws) on the same synthetic dataset, so the
per-seed differences and a Wilcoxon signed-rank test compare AdaCon with the plain L1 loss. Fig. 3 check: the
Spearman correlation of cosine similarity vs ECDF label distance of the best checkpoint's validation-fold features
(backbone features and projection embeddings) per run.

    OV='{"iterations": 400, "lr_milestones": [240, 340], "demo_kwargs": {"num_patients": 480}}'
    python benchmarks/bench_adacon_bmd_quality.py --seeds 0 2 4 6 8 --overrides "$OV" \
        --demo-dir .cache/bmd_demo_data_480 --work-dir .cache/bench_bmd_quality_i11 &
    python benchmarks/bench_adacon_bmd_quality.py --seeds 1 3 5 7 9 --overrides "$OV" \
        --demo-dir .cache/bmd_demo_data_480 --work-dir .cache/bench_bmd_quality_i11 &

(two processes sharing ``--work-dir``, one torch thread each; a per-run lock file keeps them off each other's runs —
delete a ``<run>.lock`` left by a killed process before resuming.)

Finished runs are cached in ``--work-dir`` (JSON per run), so an interrupted benchmark continues where it stopped;
the report and ``<out>_runs.json`` are rewritten after each run, so partial results are kept.
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
BUNDLE = os.path.join(ROOT, "bundles", "adacon_bmd_xray")
sys.path.insert(0, HERE)
from paired_stats import machine_load, mean_std, paired_summary  # noqa: E402

VARIANTS = {
    "L1 (regression only)": {"gamma_con": 0.0},
    "L1 + AdaCon": {},
    "L1 + SupCon": {
        "contrastive_loss": {"_target_": "monai_contrastive.losses.SupConLoss", "scale": "@contrastive_scale"}
    },
    "L1 + N-pair": {
        "contrastive_loss": {"_target_": "monai_contrastive.losses.NPairLoss", "scale": "@contrastive_scale"}
    },
    "L1 + adaptive triplet": {"contrastive_loss": {"_target_": "monai_contrastive.losses.AdaptiveTripletLoss"}},
    "AdaCon two-stage": "two_stage",
}

RUN_SCRIPT = r"""
import json, os, sys, torch
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
from monai.bundle import ConfigWorkflow
from monai_contrastive.handlers import regression_metrics
args = json.loads(sys.argv[1])
root = args["bundle_root"]
cfg = lambda *f: [os.path.join(root, "configs", x) for x in f]
overrides = args["overrides"]
if args["two_stage"]:
    it = int(overrides["iterations"])
    stage = dict(overrides, iterations=it // 2, lr_milestones=[it // 4, 3 * it // 8])
    wf = ConfigWorkflow(config_file=cfg("train.json", "demo.json", "pretrain.json"), workflow_type="train",
                        bundle_root=root, **stage)
    wf.initialize(); wf.run(); wf.finalize()
    ft = dict(stage, learning_rate=float(args["finetune_lr"]))
    wf = ConfigWorkflow(config_file=cfg("train.json", "demo.json", "finetune.json"), workflow_type="train",
                        bundle_root=root, **ft)
else:
    wf = ConfigWorkflow(config_file=cfg("train.json", "demo.json"), workflow_type="train", bundle_root=root,
                        **overrides)
wf.initialize(); wf.run()
p = wf.parser
net, device = p.get_parsed_content("network"), p.get_parsed_content("device")
best = torch.load(os.path.join(p.get_parsed_content("ckpt_dir"), "model.pt"), map_location=device, weights_only=True)
net.load_state_dict(best["model"]); net.eval()
from monai.data import DataLoader, Dataset
from monai_contrastive.data import load_regression_datalist
sys.path.insert(0, args["bench_dir"])
from paired_stats import feature_label_spearman
ecdf = p.get_parsed_content("ecdf"); ecdf.load_state_dict(best["ecdf"])
pre = p.get_parsed_content("validate#preprocessing")
def outputs(items):
    res = {"pred": [], "features": [], "embedding": [], "label": []}
    with torch.no_grad():
        for b in DataLoader(Dataset(items, pre), batch_size=32):
            o = net(b["image"].to(device))
            for k in ("pred", "features", "embedding"):
                res[k].append(o[k].cpu())
            res["label"].append(torch.as_tensor(b["label"]).reshape(-1))
    return {k: torch.cat(v) for k, v in res.items()}
test = outputs(load_regression_datalist(p.get_parsed_content("datalist_file"), "testing"))
m = regression_metrics(test["pred"].reshape(-1).tolist(), test["label"].tolist())
val = outputs(p.get_parsed_content("val_items"))
m.update({"n_test": int(test["label"].numel()), "best_val_mae": best["metric"], "best_epoch": best["epoch"],
          "spearman_features": feature_label_spearman(val["features"], val["label"], ecdf),
          "spearman_embedding": feature_label_spearman(val["embedding"], val["label"], ecdf),
          "n_val": int(val["label"].numel())})
json.dump(m, open(args["result"], "w"))
"""

BASE = "L1 (regression only)"


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
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data"))
    spec = VARIANTS[variant]
    overrides = {
        "seed": seed,
        "fold": seed % 4,
        "fold_seed": seed // 4,  # seeds 4-7 use another patient shuffle: no two seeds share a train/validation split
        "num_workers": args.workers,
        "demo_dir": args.demo_dir,
        **json.loads(args.overrides),
    }
    with open(os.path.join(BUNDLE, "configs", "demo.json")) as f:
        demo = json.load(f)
    overrides.setdefault("iterations", demo.get("iterations", 600))
    if isinstance(spec, dict):
        overrides.update(spec)
    payload = {
        "bundle_root": root,
        "overrides": overrides,
        "two_stage": spec == "two_stage",
        "finetune_lr": args.finetune_lr,
        "result": result,
        "bench_dir": HERE,
    }
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
    m["fold"], m["fold_seed"] = overrides["fold"], overrides["fold_seed"]
    m["load_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with open(result, "w") as f:
        json.dump(m, f)
    shutil.rmtree(root, ignore_errors=True)
    os.remove(lock)
    print(
        f"{tag}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()), flush=True
    )
    return m


def _ci(ps: dict, fmt: str) -> str:
    return f"[{ps['ci95'][0]:{fmt}}, {ps['ci95'][1]:{fmt}}]" if "ci95" in ps else "n/a"


def _fmt_p(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and x != x) else f"{x:.3f}"


def _load_range(results: dict[str, dict[int, dict]]) -> str:
    loads = [r["load_after"] for runs in results.values() for r in runs.values() if r.get("load_after") is not None]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"


def _mean_predictor(args) -> dict | None:
    """Test MAE / RMSE / R² of the constant prediction "mean training label" (the floor any model must beat)."""
    from monai_contrastive.data import load_regression_datalist
    from monai_contrastive.handlers import regression_metrics

    path = os.path.join(args.demo_dir, "dataset.json")
    if not os.path.isfile(path):
        return None
    train = [x["label"] for x in load_regression_datalist(path, "training")]
    test = [x["label"] for x in load_regression_datalist(path, "testing")]
    return regression_metrics([sum(train) / len(train)] * len(test), test) | {"n": len(test)}


def _reading(results: dict[str, dict[int, dict]], base_runs: dict[int, dict]) -> list[str]:
    """One line per method from its paired test-MAE differences against the plain L1 loss."""
    out = []
    for variant, runs in results.items():
        if variant == BASE or not base_runs:
            continue
        ps = paired_summary({s: r["mae"] for s, r in base_runs.items()}, {s: r["mae"] for s, r in runs.items()})
        if not ps["n"]:
            continue
        p = ps.get("wilcoxon_p")
        significant = p is not None and p < 0.05
        verdict = (
            ("lower" if ps["mean"] < 0 else "higher") + f" test MAE than {BASE}, significant at 0.05"
            if significant
            else f"not distinguishable from {BASE} at 0.05"
        )
        out.append(
            f"- {variant}: ΔMAE {ps['mean']:+.4f} ± {ps['std']:.4f} g/cm² over {ps['n']} paired seeds, lower in "
            f"{ps['lower_in']} of {ps['n']}, Wilcoxon p {_fmt_p(p)}: {verdict}."
        )
    return out


def write_report(results: dict[str, dict[int, dict]], args, started: float, final: bool) -> None:
    """``results[variant][seed]`` = the run's metrics; rewrites ``args.out`` (markdown) and ``<out>_runs.json``."""
    with open(os.path.join(BUNDLE, "configs", "demo.json")) as f:
        demo = json.load(f)
    demo.update(json.loads(args.overrides))
    for k in ("_comment", "run#1", "heldout_test_items", "demo_r2_target", "inference_overrides"):
        demo.pop(k, None)
    done = [set(r) for r in results.values() if r]
    complete = sorted(set.intersection(*done)) if done and len(done) == len(results) else []
    status = (
        f"finished: {len(complete)} paired seeds ({complete})"
        if final
        else f"**partial** (benchmark still running or stopped): {len(complete)} seeds have every method ({complete})"
    )
    lines = [
        "# AdaCon on the synthetic BMD demo task: quality (paired seeds)",
        "",
        f"- status: {status}; wall time of the finished runs, summed: "
        f"{sum(r.get('seconds', 0) for rs in results.values() for r in rs.values()) / 60:.0f} min "
        "(several runs ran side by side)",
        (
            f"- date: {datetime.date.today()}; machine: {platform.processor() or platform.machine()}, {os.cpu_count()} "
            f"CPU cores, GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}; "
            f"{machine_load()} (the 2 cores were shared with other jobs: minutes/run are under load, not idle timings)"
            if not getattr(args, "from_runs_json", None)
            else "- runs: 1-min load average after each run "
            + _load_range(results)
            + " (the 2 cores were shared with other jobs: minutes/run are under load, not idle timings)"
        ),
        f"- python {platform.python_version()}, torch {torch.__version__}, monai {__import__('monai').__version__}",
        f"- command: `python benchmarks/bench_adacon_bmd_quality.py {' '.join(sys.argv[1:])}`",
        f"- {args.threads} torch thread(s) per run, runs one after another in this process",
        *(
            [
                f"- this report was rewritten on {datetime.date.today()} from "
                f"`{os.path.relpath(args.from_runs_json, ROOT)}` "
                "(no run made now: the machine, load and minutes above and below are those of the original runs, "
                "see `git log` of that file)"
            ]
            if getattr(args, "from_runs_json", None)
            else []
        ),
        *(
            [
                f"- seeds {args.left_out_seeds} of `{os.path.relpath(args.from_runs_json, ROOT)}` are left out of "
                "this report (`--seeds`); their runs stay in that file"
            ]
            if getattr(args, "left_out_seeds", None)
            else []
        ),
        "- setting: the bundle's `train.json` + `demo.json` (the demo's backbone and budget) with: "
        + ", ".join(f"`{k}`={json.dumps(v)}" for k, v in demo.items())
        + "; L1 loss, gamma_con 0.005, s = 150 (authors' code); seed s trains fold s mod 4 of the patient shuffle "
        "`fold_seed` = s div 4 (distinct train/validation splits for every seed) with the same seed for every method "
        "(paired); best checkpoint by validation MAE on the held-out fold; **metrics on the separate test "
        "patients** (never trained on or used for selection). Two-stage: contrastive-only pretraining for half the "
        f"iterations, then L1 fine-tuning (lr {args.finetune_lr:g}) for the other half.",
        "",
        "Over the seeds where every method finished:",
        "",
        "| method | MAE ↓ | RMSE ↓ | R² ↑ | ΔMAE vs L1 | seeds | minutes/run |",
        "|---|---|---|---|---|---|---|",
    ]
    base_runs = results.get(BASE, {})
    base = mean_std([r["mae"] for s, r in base_runs.items() if s in complete])[0] if base_runs and complete else None
    for variant, runs in results.items():
        rs = [runs[s] for s in complete]
        if not rs:
            continue
        mae, rmse, r2 = (mean_std([r[k] for r in rs]) for k in ("mae", "rmse", "r2"))
        delta = f"{100 * (mae[0] - base) / base:+.1f} %" if base else ""
        mins = sum(r.get("seconds", 0) for r in rs) / len(rs) / 60
        lines.append(
            f"| {variant} | {mae[0]:.4f} ± {mae[1]:.4f} | {rmse[0]:.4f} ± {rmse[1]:.4f} | "
            f"{r2[0]:.3f} ± {r2[1]:.3f} | {delta} | {len(rs)} | {mins:.1f} |"
        )
    mp = _mean_predictor(args)
    if mp:
        lines += [
            "",
            f"For scale: predicting the training mean for every test image gives MAE {mp['mae']:.4f}, RMSE "
            f"{mp['rmse']:.4f}, R² {mp['r2']:.3f} (n = {mp['n']}).",
        ]
    lines += [
        "",
        f"Paired differences vs {BASE} (test MAE in g/cm²; negative = lower MAE than L1 alone), over every seed both "
        "finished:",
        "",
        "| method | per-seed ΔMAE (seed: value) | mean ± std | 95 % CI | lower in | Wilcoxon p (exact, two-sided) "
        "| paired t p |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant, runs in results.items():
        if variant == BASE or not base_runs:
            continue
        ps = paired_summary({s: r["mae"] for s, r in base_runs.items()}, {s: r["mae"] for s, r in runs.items()})
        if not ps["n"]:
            continue
        per = ", ".join(f"{s}: {d:+.4f}" for s, d in zip(ps["seeds"], ps["diffs"]))
        lines.append(
            f"| {variant} | {per} | {ps['mean']:+.4f} ± {ps['std']:.4f} | {_ci(ps, '.4f')} | "
            f"{ps['lower_in']}/{ps['n']} | "
            f"{_fmt_p(ps.get('wilcoxon_p'))} (min possible {ps['min_possible_p']:.3f}) | {_fmt_p(ps.get('ttest_p'))} |"
        )
    lines += [
        "",
        "## Fig. 3 check: is the feature space ordered by BMD?",
        "",
        "Spearman rho between the cosine similarity of two validation-fold images' features and the distance of their "
        "labels after the training ECDF, over every pair (AdaCon Fig. 3e-h; more negative = more ordered), for the "
        "best checkpoint of each run. `features`: the backbone's features (every method has them); `embedding`: the "
        "projection head's output (trained by the contrastive loss; untrained for L1 alone).",
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
    lines += ["", "Per run (seed: test MAE, test R², best epoch, minutes):", ""]
    for variant, runs in results.items():
        lines.append(
            f"- {variant}: "
            + "; ".join(
                f"{s}: {r['mae']:.4f}, {r['r2']:.3f}, ep {r['best_epoch']}, {r.get('seconds', 0) / 60:.1f} min"
                for s, r in sorted(runs.items())
            )
        )
    shared = sorted({s for runs in results.values() for s, r in runs.items() if s >= 4 and "fold_seed" not in r})
    if shared:
        lines += [
            "",
            f"**Caveat:** seeds {shared} ran before each seed had its own patient shuffle: seed s used fold s mod 4 of "
            "shuffle 0, the same train/validation split as seed s - 4 (different initialisation and augmentation "
            "draws only). Re-run them to make every seed's split distinct.",
        ]
    lines += ["", "## Reading (written by this script from the tables above)", ""] + _reading(results, base_runs)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    runs_json = os.path.splitext(args.out)[0] + "_runs.json"
    source = getattr(args, "from_runs_json", None)
    if not (source and os.path.abspath(source) == os.path.abspath(runs_json)):  # never shrink the stored runs
        with open(runs_json, "w") as f:
            json.dump({v: {str(s): r for s, r in runs.items()} for v, runs in results.items()}, f, indent=1)
    print("\n".join(lines), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--overrides", default="{}", help="JSON of extra config overrides for every run")
    ap.add_argument("--finetune-lr", type=float, default=None, help="two-stage stage 2 lr (default: demo lr / 10)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work-dir", default=os.path.join(ROOT, ".cache", "bench_bmd_quality"))
    ap.add_argument("--demo-dir", default=os.path.join(ROOT, ".cache", "bmd_demo_data"))
    ap.add_argument("--report-only", action="store_true", help="aggregate the finished runs in --work-dir, run none")
    ap.add_argument(
        "--from-runs-json",
        default=None,
        help="with --report-only: rewrite the report from a committed <out>_runs.json instead of --work-dir",
    )
    ap.add_argument("--out", default=os.path.join(HERE, "results", "adacon_bmd_quality.md"))
    args = ap.parse_args()
    if args.finetune_lr is None:
        with open(os.path.join(BUNDLE, "configs", "demo.json")) as f:
            demo = json.load(f)
        demo.update(json.loads(args.overrides))
        args.finetune_lr = float(demo.get("learning_rate", 0.01)) / 10
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
        # --seeds selects the stored runs to report (e.g. leaving out seeds that shared a split); the file keeps all
        results = {v: {s: r for s, r in runs.items() if s in args.seeds} for v, runs in stored.items()}
        args.left_out_seeds = sorted({s for runs in stored.values() for s in runs} - set(args.seeds))
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

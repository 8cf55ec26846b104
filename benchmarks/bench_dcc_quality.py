"""Paired-seed quality of DCC-CL pretraining on the synthetic multi-phase CT: test Dice per phase after fine-tuning
from no pretraining, SimCLR and DCC (optionally AGCL / CE), every random stage re-drawn per seed.

For each seed s, in one copy of the bundle:

1. the coarse 3D network trained with seed s (`coarse.json + demo.json`, the demo's overrides from
   `commands.json`); its own test Dice is recorded: every arm of the seed reads its masks;
2. each pretraining (SimCLR, DCC, ...) run once with seed s on that coarse network's organ patches (the demo's
   pretraining overrides, `pretrain_method` the arm);
3. DeepLabV3+ fine-tuned with seed s from each init (`none` = random encoder; the demo's fine-tuning overrides),
   then evaluated on the demo datalist's test volumes (coarse -> patches -> fine -> majority voting; Dice and NSD
   per case and per phase; never used for training or model selection).

Then per arm against `none` (and DCC against SimCLR): mean +- std over seeds, per-seed paired differences and the
exact Wilcoxon signed-rank test (scipy). Runs are recorded one by one in a runs file, so a killed benchmark resumes
where it stopped, and seeds can run in separate processes and be merged:

    python benchmarks/bench_dcc_quality.py --seeds 0 2 4 --runs-json /tmp/a.json --threads 1 &
    python benchmarks/bench_dcc_quality.py --seeds 1 3 --runs-json /tmp/b.json --threads 1 &
    python benchmarks/bench_dcc_quality.py --report-only --merge /tmp/a.json /tmp/b.json

Writes ``benchmarks/results/dcc_quality.md`` and ``dcc_quality_runs.json``.
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

BUNDLE = os.path.join(ROOT, "bundles", "dcc_multiphase_ct")
ARM_LABELS = {
    "none": "no pretraining (random encoder)",
    "simclr": "SimCLR (NT-Xent)",
    "ce": "cross-entropy on organ + phase",
    "agcl": "AGCL (supervised contrast, organ + phase)",
    "dcc": "DCC-CL (eq. 4)",
}
PHASES = ("non_contrast", "arterial", "portal_venous", "delayed")


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def _demo_stages() -> dict:
    """The demo's stage overrides (``commands.json``), keyed by the stage's first config."""
    with open(os.path.join(BUNDLE, "configs", "commands.json")) as f:
        stages = json.load(f)["demo"]["stages"]
    return {s["configs"][0] + ("+evaluate" if "evaluate.json" in s["configs"] else ""): s for s in stages}


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


def _seed_dir(args, seed: int) -> str:
    work = os.path.join(args.work_dir, f"seed{seed}")
    if not os.path.isdir(os.path.join(work, "configs")):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(BUNDLE, work, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", "cache"))
    return work


def _common(args, seed: int) -> dict:
    return {"demo_dir": args.demo_dir, "seed": seed, "amp": False, "device": "cpu", "num_workers": 0}


def coarse(args, seed: int) -> dict:
    """The seed's coarse network and its own test Dice (every arm of the seed uses its masks)."""
    import torch

    work = _seed_dir(args, seed)
    stage = _demo_stages()["coarse.json"]
    t0 = time.time()
    _run(work, stage["configs"], {**_common(args, seed), **stage["overrides"]})
    with open(os.path.join(work, "eval", "coarse", "seg_metrics.json")) as f:
        report = json.load(f)
    return {
        "seed": seed,
        "model": os.path.join(work, "models", "coarse.pt"),
        "overrides": stage["overrides"],
        "dice": report["overall"]["dice"]["mean"],
        "nsd": report["overall"]["nsd"]["mean"],
        "n_cases": report["n_cases"],
        "phases": {p: v["overall"]["dice"]["mean"] for p, v in (report.get("phases") or {}).items()},
        "wall_s": round(time.time() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def pretrain(args, seed: int, method: str, coarse_run: dict) -> dict:
    """One pretraining of ``method`` with seed ``seed`` on the seed's coarse masks."""
    import torch

    work = _seed_dir(args, seed)
    stage = _demo_stages()["pretrain.json"]
    path = os.path.join(work, "models", f"pretrained_{method}.pt")
    overrides = {
        **_common(args, seed),
        **stage["overrides"],
        "pretrain_method": method,
        "coarse_ckpt": coarse_run["model"],
        "pretrained_path": path,
    }
    configs = [c for c in stage["configs"] if c != "demo.json"] + (
        [f"pretrain_{method}.json"] if method != "dcc" else []
    )
    t0 = time.time()
    _run(work, configs + ["demo.json"], overrides)
    if not os.path.isfile(path):
        raise SystemExit(f"pretraining {method} seed {seed} wrote no {path}")
    return {
        "seed": seed,
        "method": method,
        "model": path,
        "overrides": stage["overrides"],
        "wall_s": round(time.time() - t0, 1),
        "torch_threads": torch.get_num_threads(),
    }


def finetune(args, seed: int, arm: str, coarse_run: dict, pre: dict | None) -> dict:
    """Fine-tune DeepLabV3+ from ``arm``'s encoder, then evaluate on the test volumes."""
    import torch

    work = _seed_dir(args, seed)
    stages = _demo_stages()
    tune = {
        **_common(args, seed),
        **stages["train.json"]["overrides"],
        **args.train_overrides,
        "init": arm,
        "ckpt_dir": os.path.join(work, "models", arm),
        "log_dir": os.path.join(work, "runs", f"train_{arm}"),
        "coarse_ckpt": coarse_run["model"],
        "pretrained_path": "" if pre is None else pre["model"],
    }
    t0 = time.time()
    _run(work, stages["train.json"]["configs"], tune)
    train_s = time.time() - t0
    out_dir = os.path.join(work, "eval", arm)
    evaluate = {**tune, **stages["train.json+evaluate"]["overrides"], "init": arm, "output_dir": out_dir}
    evaluate["make_embedding_figure"] = False
    _run(work, stages["train.json+evaluate"]["configs"], evaluate)
    with open(os.path.join(out_dir, "seg_metrics.json")) as f:
        report = json.load(f)
    return {
        **_validation(tune["ckpt_dir"]),
        "seed": seed,
        "arm": arm,
        "pretraining": None if pre is None else {k: pre[k] for k in ("method", "seed", "wall_s")},
        "dice": report["overall"]["dice"]["mean"],
        "nsd": report["overall"]["nsd"]["mean"],
        "n_cases": report["n_cases"],
        "phases": {p: v["overall"]["dice"]["mean"] for p, v in (report.get("phases") or {}).items()},
        "overrides": {**stages["train.json"]["overrides"], **args.train_overrides},
        "train_s": round(train_s, 1),
        "wall_s": round(time.time() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _validation(ckpt_dir: str) -> dict:
    """The fine-tuning's selection record: the epoch of the best validation patch Dice and that Dice."""
    try:
        with open(os.path.join(ckpt_dir, "val_metrics.json")) as f:
            best = json.load(f).get("best_checkpoint", {})
    except OSError:
        return {}
    return {"best_epoch": best.get("epoch"), "best_val_patch_dice": best.get("val_patch_dice")}


def backfill(runs: dict, work_dirs: list[str]) -> int:
    """Add the selection record to fine-tuning records written before it was recorded, from the runs' files under
    ``work_dirs`` (``<work>/seed<s>/models/<arm>/val_metrics.json``); returns how many were filled."""
    filled = 0
    for rec in runs["finetuning"].values():
        if rec.get("best_epoch") is not None:
            continue
        for work in work_dirs:
            found = _validation(os.path.join(work, f"seed{rec['seed']}", "models", rec["arm"]))
            if found.get("best_epoch") is not None:
                rec.update(found, selection_backfilled=True)
                filled += 1
                break
    return filled


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
    for path in args.reuse_from:  # the coarse networks and pretrainings of another runs file (same seeds)
        with open(path) as f:
            other = json.load(f)
        for part in ("coarse", "pretraining"):
            for key, rec in other.get(part, {}).items():
                if key not in runs[part] and os.path.isfile(rec["model"]):
                    runs[part][key] = {**rec, "reused_from": os.path.basename(path)}
    for seed in args.seeds:
        key = f"{seed}/coarse"
        if key not in runs["coarse"] or not os.path.isfile(runs["coarse"][key]["model"]):
            runs["coarse"][key] = coarse(args, seed)
            print(f"{key}: Dice {runs['coarse'][key]['dice']:.4f}", flush=True)
            _save(args.runs_json, runs)
        for arm in args.methods:
            key = f"{seed}/{arm}"
            if key in runs["finetuning"]:
                continue
            pre = None
            if arm != "none":
                pkey = f"{seed}/pretrain/{arm}"
                if pkey not in runs["pretraining"] or not os.path.isfile(runs["pretraining"][pkey]["model"]):
                    runs["pretraining"][pkey] = pretrain(args, seed, arm, runs["coarse"][f"{seed}/coarse"])
                    _save(args.runs_json, runs)
                pre = runs["pretraining"][pkey]
            runs["finetuning"][key] = finetune(args, seed, arm, runs["coarse"][f"{seed}/coarse"], pre)
            print(f"{key}: Dice {runs['finetuning'][key]['dice']:.4f}", flush=True)
            _save(args.runs_json, runs)


def _fmt(values: list[float], digits: int = 3) -> str:
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def summary(runs: dict) -> dict:
    """Per arm: test mean Dice mean / std over seeds and the paired comparison with ``none`` (and DCC with SimCLR);
    what the READMEs quote (``update_docs.py`` reads it from the runs file)."""
    tune = list(runs["finetuning"].values())
    out = {"arms": {}, "paired": {}}
    by_arm = {a: {r["seed"]: r["dice"] for r in tune if r["arm"] == a} for a in ARM_LABELS}
    for arm, per in by_arm.items():
        if per:
            m, sd = mean_std(list(per.values()))
            out["arms"][arm] = {"seeds": len(per), "dice_mean": m, "dice_std": sd}
    pairs = [("none", a) for a in by_arm if a != "none"] + [("simclr", "dcc")]
    for base, other in pairs:
        if by_arm.get(base) and by_arm.get(other):
            ps = paired_summary(by_arm[base], by_arm[other])
            if ps["n"]:
                out["paired"][f"{other}_vs_{base}"] = {
                    "n": ps["n"],
                    "mean": ps["mean"],
                    "std": ps["std"],
                    "higher_in": ps["n"] - ps["lower_in"] - sum(d == 0 for d in ps["diffs"]),
                    "wilcoxon_p": ps.get("wilcoxon_p"),
                }
    coarse = [r["dice"] for r in runs["coarse"].values()]
    if coarse:
        m, sd = mean_std(coarse)
        out["coarse"] = {"seeds": len(coarse), "dice_mean": m, "dice_std": sd}
    return out


def write_report(runs: dict, command: str, runs_name: str = "dcc_quality_runs.json") -> str:
    import monai
    import torch

    tune = list(runs["finetuning"].values())
    pre = list(runs["pretraining"].values())
    coarse_runs = {r["seed"]: r for r in runs["coarse"].values()}
    seeds = sorted({r["seed"] for r in tune})
    meta = runs.get("meta", {})
    arms = [a for a in ARM_LABELS if any(r["arm"] == a for r in tune)]
    by_arm = {a: {r["seed"]: r for r in tune if r["arm"] == a} for a in arms}
    ov = (tune[0]["overrides"] if tune else {}) or {}
    pre_ov = (pre[0]["overrides"] if pre else {}) or {}
    co_ov = (next(iter(coarse_runs.values()))["overrides"] if coarse_runs else {}) or {}
    lines = [
        "# DCC-CL quality on the synthetic multi-phase CT: no pretraining vs SimCLR vs DCC, paired seeds",
        "",
        "Demo sizes (`demo.json`: ResNet-18 encoder, 48-pixel organ patches) with the stage settings these runs "
        f"recorded: coarse 3D U-Net {co_ov.get('epochs')} epochs; pretraining {pre_ov.get('epochs')} epochs; "
        f"DeepLabV3+ fine-tuning {ov.get('epochs')} epochs at lr {ov.get('learning_rate')}; on the demo datalist "
        "(24 labelled training volumes, 8 unlabelled, 4 validation, 8 test; four phases). Per seed s: the coarse "
        "network trained with seed s, every pretraining run once with seed s on that coarse network's patches, every "
        "arm fine-tuned with seed s, so the arms of a seed differ only in the encoder's initialisation. Test: the "
        "datalist's testing volumes (coarse -> organ patches -> fine -> majority voting, `evaluate.json`: Dice and "
        "NSD at the FLARE22 per-organ tolerances on each case's original grid; an organ predicted but absent from a "
        "case's ground truth scores 0), never used for training or model selection.",
        "",
        f"- date: {meta.get('date')}; commit {meta.get('commit')}",
        f"- machine: `nproc` = {len(os.sched_getaffinity(0))}, no GPU (fp32); torch threads per run "
        f"{sorted({r.get('torch_threads') for r in tune + pre})}; runs side by side on a shared machine "
        f"(1-min load at the end of each fine-tuning: {_fmt([r['load_average_1min'] for r in tune], 1)}), so wall "
        "times are indicative only",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}",
        f"- command: `{command}`",
        f"- every run: `{runs_name}`",
        *[f"- note: {n}" for n in meta.get("notes", [])],
        "",
        "## Test mean Dice over all phases",
        "",
        "| init | seeds | test mean Dice | test mean NSD | Δ Dice vs none (paired, mean ± std) | Wilcoxon p (vs "
        "none) | best epoch (of the last) | fine-tune + eval wall / run (min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {s: r["dice"] for s, r in by_arm.get("none", {}).items()}
    reading = []
    for arm in arms:
        per = by_arm[arm]
        if arm == "none" or not base:
            delta = p = "—"
        else:
            ps = paired_summary(base, {s: r["dice"] for s, r in per.items()})
            delta = f"{ps['mean']:+.3f} ± {ps['std']:.3f} (n={ps['n']})" if ps["n"] else "n/a"
            wp = ps.get("wilcoxon_p")
            p = f"{wp:.3f}" if wp is not None and wp == wp else "n/a"
            if ps["n"]:
                reading.append(
                    paired_reading(ARM_LABELS[arm], "no pretraining", ps, "test mean Dice", ".3f", "lower", "higher")
                )
        best = [r["best_epoch"] for r in per.values() if r.get("best_epoch") is not None]
        last = sorted({r["overrides"].get("epochs") for r in per.values()})
        best_txt = f"{_fmt(best, 1)} ({'/'.join(str(e) for e in last)})" if best else "n/a"
        lines.append(
            f"| {ARM_LABELS[arm]} | {len(per)} | {_fmt([r['dice'] for r in per.values()])} | "
            f"{_fmt([r['nsd'] for r in per.values()])} | {delta} | {p} | {best_txt} | "
            f"{_fmt([r['wall_s'] / 60 for r in per.values()], 1)} |"
        )
    if coarse_runs:
        cs = [coarse_runs[s] for s in seeds if s in coarse_runs]
        lines.append(
            f"| *coarse stage alone (the attention maps every arm starts from)* | {len(cs)} | "
            f"{_fmt([r['dice'] for r in cs])} | {_fmt([r['nsd'] for r in cs])} | | | | "
            f"{_fmt([r['wall_s'] / 60 for r in cs], 1)} |"
        )
    if "simclr" in by_arm and "dcc" in by_arm:
        ps = paired_summary(
            {s: r["dice"] for s, r in by_arm["simclr"].items()}, {s: r["dice"] for s, r in by_arm["dcc"].items()}
        )
        if ps["n"]:
            reading.append(paired_reading("DCC-CL", "SimCLR", ps, "test mean Dice", ".3f", "lower", "higher"))
    lines += [
        "",
        "## Test Dice per phase (mean ± std over seeds of each seed's mean over the phase's test cases)",
        "",
        "| init | " + " | ".join(PHASES) + " |",
        "|---|" + "---:|" * len(PHASES),
    ]
    for arm in arms:
        cells = [_fmt([r["phases"][ph] for r in by_arm[arm].values() if ph in r["phases"]]) for ph in PHASES]
        lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(cells) + " |")
    if coarse_runs:
        cells = [_fmt([r["phases"][ph] for r in coarse_runs.values() if ph in r["phases"]]) for ph in PHASES]
        lines.append("| *coarse stage alone* | " + " | ".join(cells) + " |")
    for ph in PHASES:
        if "none" in by_arm:
            b = {s: r["phases"][ph] for s, r in by_arm["none"].items() if ph in r["phases"]}
            for arm in arms:
                if arm == "none":
                    continue
                o = {s: r["phases"][ph] for s, r in by_arm[arm].items() if ph in r["phases"]}
                ps = paired_summary(b, o)
                if ps["n"]:
                    reading.append(
                        paired_reading(
                            f"{ARM_LABELS[arm]}, {ph}", "no pretraining", ps, "test Dice", ".3f", "lower", "higher"
                        )
                    )
    lines += [
        "",
        "Per seed (test mean Dice):",
        "",
        "| seed | coarse stage | " + " | ".join(ARM_LABELS[a] for a in arms) + " |",
        "|---:|---:|" + "---:|" * len(arms),
    ]
    for s in seeds:
        c = f"{coarse_runs[s]['dice']:.4f}" if s in coarse_runs else "—"
        cells = [f"{by_arm[a][s]['dice']:.4f}" if s in by_arm[a] else "—" for a in arms]
        lines.append(f"| {s} | {c} | " + " | ".join(cells) + " |")
    lines += ["", "## Reading (written by this script from the paired differences above)", ""] + reading
    lines += ["", "## Pretraining runs", "", "| seed | method | wall (min) |", "|---:|---|---:|"]
    for p in sorted(pre, key=lambda p: (p["seed"], p["method"])):
        lines.append(f"| {p['seed']} | {p['method']} | {p['wall_s'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=["none", "dcc", "simclr"], choices=list(ARM_LABELS))
    ap.add_argument("--train-epochs", type=int, default=None, help="fine-tuning epochs (default: the demo's)")
    ap.add_argument("--train-lr", type=float, default=None, help="fine-tuning learning rate (default: the demo's)")
    ap.add_argument(
        "--reuse-from", nargs="*", default=[], help="runs files whose coarse networks and pretrainings are reused"
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "monai_contrastive_bench_dcc_quality"))
    ap.add_argument("--demo-dir", default=None)
    ap.add_argument("--runs-json", default=os.path.join(HERE, "results", "dcc_quality_runs.json"))
    ap.add_argument("--merge", nargs="*", default=[], help="runs files to merge into --runs-json first")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--backfill-from", nargs="*", default=[], help="work dirs whose val_metrics.json fill older runs' best epoch"
    )
    ap.add_argument("--note", action="append", default=[], help="a line for the report (kept in the runs file)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "dcc_quality.md"))
    args = ap.parse_args()
    args.train_overrides = {}
    if args.train_epochs is not None:
        args.train_overrides["epochs"] = args.train_epochs
    if args.train_lr is not None:
        args.train_overrides["learning_rate"] = args.train_lr
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.work_dir = os.path.abspath(args.work_dir)
    args.demo_dir = os.path.abspath(args.demo_dir or os.path.join(args.work_dir, "demo_data"))
    os.makedirs(args.work_dir, exist_ok=True)
    runs = {"meta": {}, "coarse": {}, "pretraining": {}, "finetuning": {}}
    for path in ([args.runs_json] if os.path.isfile(args.runs_json) else []) + list(args.merge):
        with open(path) as f:
            other = json.load(f)
        for part in ("coarse", "pretraining", "finetuning"):
            runs[part].update(other.get(part, {}))
        runs["meta"] = {**other.get("meta", {}), **runs["meta"]}
        runs["meta"]["commands"] = sorted(set(runs["meta"].get("commands", []) + other["meta"].get("commands", [])))
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    runs["meta"]["notes"] = runs["meta"].get("notes", []) + [
        n for n in args.note if n not in runs["meta"].get("notes", [])
    ]
    if args.backfill_from:
        print(f"best epoch backfilled for {backfill(runs, args.backfill_from)} run(s)")
    if not args.report_only:
        runs["meta"].update(
            commit=_commit(), date=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", load_at_start=machine_load()
        )
        runs["meta"]["commands"] = sorted(set(runs["meta"].get("commands", []) + [command]))
        run_all(args, runs)
    _save(args.runs_json, runs)
    if runs["finetuning"]:
        runs["summary"] = summary(runs)
        _save(args.runs_json, runs)
        text = write_report(runs, "; ".join(runs["meta"].get("commands", [command])), os.path.basename(args.runs_json))
        with open(args.out, "w") as f:
            f.write(text)
        print(text)


if __name__ == "__main__":
    main()

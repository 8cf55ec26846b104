"""LRC + MoCo pretraining vs random initialisation on the synthetic CT (thesis Table 4.2 and Table 4.1, demo scale).

Every step runs the bundle's own configs in a subprocess on a copy of the bundle in ``--work-dir``:

1. pretraining, once per seed (pretraining seed = fine-tuning seed, so that a paired comparison sees the
   pretraining's randomness too; ``--pretrain-seeds`` shares fewer pretrainings between seeds, labelled so in the
   report): ``pretrain_common.json`` with ``pretrain_lrc.json`` and with ``pretrain_moco.json`` (+
   ``demo_pretrain.json``) on the unlabelled pool and the training images (labels unused), then the LRC pair +
   ``demo_pretrain.json`` + ``evaluate_lrc.json`` (Table 4.1: k-means on the LRC pixel embeddings of 10 held-out
   slices from each of the 5 validation volumes vs their superpixels, AMI/ARI, LRC vs random init.);
2. fine-tuning, for every seed and init (``random``, ``moco``, ``lrc``, ``lrc_moco``, the same seeds, data subset
   and pretrained models for each init: paired): ``train.json + demo.json`` with ``init``, ``num_train_volumes``
   labelled volumes, ``seed = subset_seed = s``, then ``evaluate.json`` on the 5 ``testing`` volumes never used for
   training or model selection.

    python benchmarks/bench_lrc_quality.py --seeds 0 1 2 --threads 1 --out benchmarks/results/lrc_pretraining_quality.md

Finished steps are cached in ``--work-dir`` (one JSON each), so an interrupted benchmark continues; runs are
ordered seed by seed so that partial results stay paired; ``--report-only`` writes the report of what finished.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import monai
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_lrc_baseline import _cpu_model, _fmt  # noqa: E402

from monai_contrastive.data.synthetic_ct import generate_ct_demo  # noqa: E402

ROOT = os.path.dirname(HERE)
BUNDLE = os.path.join(ROOT, "bundles", "lrc_multiorgan_ct")
INITS = ["random", "moco", "lrc", "lrc_moco"]
LABELS = {"random": "Random init.", "moco": "MoCo", "lrc": "LRC", "lrc_moco": "LRC + MoCo"}

RUN_SCRIPT = r"""
import json, os, sys, time, torch
from monai.bundle import ConfigWorkflow
args = json.loads(sys.argv[1])
if args["threads"]:
    torch.set_num_threads(args["threads"])
root = args["bundle_root"]
conf = os.path.join(root, "configs")
common = dict(meta_file=os.path.join(conf, "metadata.json"), logging_file=os.path.join(conf, "logging.conf"))
out = {"torch_threads": torch.get_num_threads(), "steps": []}
for files, wtype in args["steps"]:
    t0 = time.perf_counter()
    wf = ConfigWorkflow(config_file=[os.path.join(conf, f) for f in files], workflow_type=wtype, bundle_root=root,
                        **common, **args["overrides"])
    wf.initialize()
    wf.run()
    step = {"files": files, "seconds": time.perf_counter() - t0}
    if wtype == "train":
        trainer = wf.parser.get_parsed_content("train#trainer")
        step.update(iterations=int(trainer.state.iteration), epochs=int(trainer.state.epoch))
        o = trainer.state.output
        step["last_losses"] = {
            k: float(v) for k, v in o.items() if k.startswith("loss") and torch.as_tensor(v).numel() == 1
        }
    wf.finalize()
    out["steps"].append(step)
json.dump(out, open(args["result"], "w"))
"""


def _run(tag: str, root: str, steps: list, overrides: dict, args) -> dict:
    result = os.path.join(args.work_dir, tag + ".json")
    payload = {
        "bundle_root": root,
        "steps": steps,
        "overrides": overrides,
        "result": result + ".part",
        "threads": args.threads,
    }
    log = os.path.join(args.work_dir, tag + ".log")
    print(f"{tag}: running (log {log})", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(
            [sys.executable, "-c", RUN_SCRIPT, json.dumps(payload)], stdout=f, stderr=subprocess.STDOUT
        )
    if proc.returncode != 0:
        with open(log) as f:
            raise RuntimeError(f"{tag} failed (rc {proc.returncode}):\n{f.read()[-4000:]}")
    with open(result + ".part") as f:
        m = json.load(f)
    os.remove(result + ".part")
    m.update(wall_s=time.perf_counter() - t0, finished=datetime.now(timezone.utc).isoformat())
    return m


def _fresh_bundle(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", "cache"))


def pretrain(seed: int, args) -> dict:
    tag = f"pretrain_seed{seed}"
    result = os.path.join(args.work_dir, tag + ".json")
    if os.path.isfile(result):
        with open(result) as f:
            return json.load(f)
    root = os.path.join(args.work_dir, tag)
    _fresh_bundle(root)
    overrides = {"dataset_dir": "", "demo_dir": args.demo_dir, "seed": seed}
    if args.pretrain_epochs:
        overrides["epochs"] = args.pretrain_epochs
    # LRC and MoCo pretrain independently (their own model folders): run them side by side
    jobs = [
        (
            f"{tag}_lrc",
            root,
            [[["pretrain_common.json", "pretrain_lrc.json", "demo_pretrain.json"], "train"]],
            overrides,
        ),
        (
            f"{tag}_moco",
            root,
            [[["pretrain_common.json", "pretrain_moco.json", "demo_pretrain.json"], "train"]],
            overrides,
        ),
    ]
    t0 = time.perf_counter()
    lrc, moco = _parallel(jobs, args)
    ev = _run(
        f"{tag}_clusters",
        root,
        [[["pretrain_common.json", "pretrain_lrc.json", "demo_pretrain.json", "evaluate_lrc.json"], None]],
        overrides,
        args,
    )
    m = {
        "steps": lrc["steps"] + moco["steps"] + ev["steps"],
        "torch_threads": lrc["torch_threads"],
        "wall_s": time.perf_counter() - t0,
        "finished": ev["finished"],
    }
    with open(os.path.join(root, "eval", "lrc_clusters.json")) as f:
        clusters = json.load(f)
    clusters.pop("per_slice", None)
    m.update(seed=seed, clusters=clusters, models=os.path.join(root, "models"))
    with open(result, "w") as f:
        json.dump(m, f)
    print(
        f"{tag}: AMI/ARI LRC {clusters['LRC']['ami_mean']:.3f}/{clusters['LRC']['ari_mean']:.3f}, random "
        f"{clusters['random init.']['ami_mean']:.3f}/{clusters['random init.']['ari_mean']:.3f}",
        flush=True,
    )
    return m


def _parallel(jobs: list, args) -> list[dict]:
    """``_run`` for each job, ``args.parallel`` at a time (threads only wait on the subprocesses)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        futures = [pool.submit(_run, tag, root, steps, overrides, args) for tag, root, steps, overrides in jobs]
        return [f.result() for f in futures]


def _finetune_job(init: str, seed: int, pre: dict, args):
    tag = f"{init}_seed{seed}"
    root = os.path.join(args.work_dir, tag)
    _fresh_bundle(root)
    for name in ("pretrain_lrc", "pretrain_moco"):
        shutil.copytree(os.path.join(pre["models"], name), os.path.join(root, "models", name))
    overrides = {
        "dataset_dir": "",
        "demo_dir": args.demo_dir,
        "seed": seed,
        "subset_seed": seed,
        "init": init,
        "num_train_volumes": args.volumes,
        "num_workers": 0,
    }
    if args.epochs:
        overrides.update(epochs=args.epochs, val_interval=min(args.epochs, 10))
    steps = [[["train.json", "demo.json"], "train"], [["train.json", "demo.json", "evaluate.json"], None]]
    return tag, root, steps, overrides


def _finetune_result(m: dict, init: str, seed: int, pre: dict, args) -> dict:
    tag = f"{init}_seed{seed}"
    root = os.path.join(args.work_dir, tag)
    with open(os.path.join(root, "models", "model.pt.json")) as f:
        m["best"] = json.load(f)
    with open(os.path.join(root, "eval", "seg_metrics.json")) as f:
        seg = json.load(f)
    m["overall"] = seg["overall"]
    m.update(init=init, seed=seed, pretrain_seed=pre["seed"])
    with open(os.path.join(args.work_dir, tag + ".json"), "w") as f:
        json.dump(m, f)
    shutil.rmtree(root, ignore_errors=True)
    print(
        f"{tag}: test Dice {m['overall']['dice']['mean']:.4f}, NSD {m['overall']['nsd']['mean']:.4f}, "
        f"{m['wall_s'] / 60:.1f} min",
        flush=True,
    )
    return m


def finetune_seed(inits: list[str], seed: int, pre: dict, args) -> dict[str, dict]:
    """Every init of one seed (cached results reused), ``args.parallel`` runs at a time."""
    out, todo = {}, []
    for init in inits:
        path = os.path.join(args.work_dir, f"{init}_seed{seed}.json")
        if os.path.isfile(path):
            with open(path) as f:
                out[init] = json.load(f)
        else:
            todo.append(init)
    results = _parallel([_finetune_job(i, seed, pre, args) for i in todo], args)
    for init, m in zip(todo, results):
        out[init] = _finetune_result(m, init, seed, pre, args)
    return out


def _wilcoxon(diffs: list[float]) -> str:
    try:
        from scipy.stats import wilcoxon

        if len(diffs) < 2 or all(d == 0 for d in diffs):
            return "n/a"
        return f"{wilcoxon(diffs).pvalue:.3f}"
    except Exception:  # scipy missing or too few pairs
        return "n/a"


def _reading(runs: dict, rand: dict) -> list[str]:
    """One sentence per pretrained init, from the paired per-seed differences of test mean Dice against random."""
    out = []
    for init in INITS:
        if init == "random":
            continue
        pairs = [
            (r["overall"]["dice"]["mean"], rand[r["seed"]]["overall"]["dice"]["mean"])
            for r in runs.get(init, [])
            if r["seed"] in rand
        ]
        if not pairs:
            continue
        diffs = [a - b for a, b in pairs]
        better = sum(d > 0 for d in diffs)
        mean = sum(diffs) / len(diffs)
        p = _wilcoxon(diffs)
        try:
            significant = float(p) < 0.05
        except ValueError:
            significant = False
        verdict = (
            ("better than" if mean > 0 else "worse than") + " random init., significant at 0.05"
            if significant
            else "not distinguishable from random init. at 0.05"
        )
        out.append(
            f"- {LABELS[init]}: paired Δ test mean Dice {mean:+.3f} over {len(diffs)} seeds, higher in {better} of "
            f"{len(diffs)}, Wilcoxon p = {p}: {verdict}."
        )
    if len(next(iter(runs.values()), [])) <= 5:
        out.append(
            "- With n ≤ 5 paired seeds the smallest two-sided exact Wilcoxon p is 2 / 2^n (0.0625 for 5): no "
            "difference can reach 0.05 whatever the data; the per-seed signs say more."
        )
    return out


def _demo_pretrain_epochs() -> int:
    with open(os.path.join(BUNDLE, "configs", "demo_pretrain.json")) as f:
        return int(json.load(f)["epochs"])


def write_report(pre: list[dict], runs: dict, args, command: str) -> str:
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    threads = sorted(
        {r.get("torch_threads") for rs in runs.values() for r in rs} | {p.get("torch_threads") for p in pre}
    )
    load = os.getloadavg()[0]
    epochs_note = f"{args.epochs or 40} epochs" + (
        " instead of the demo's 40, to fit the machine time" if args.epochs else ""
    )
    lines = [
        "# lrc_multiorgan_ct: LRC + MoCo pretraining vs random initialisation (synthetic CT, demo scale)",
        "",
        "Thesis Table 4.2's rows at demo scale, and Table 4.1. "
        + (
            "Pretraining repeated for every seed (seed s fine-tunes from its own pretraining s, so the paired test "
            "sees pretraining noise too)"
            if sorted({p["seed"] for p in pre}) == seeds
            else f"Pretraining SHARED between seeds (pretraining seeds {sorted({p['seed'] for p in pre})}; the paired "
            "test sees fine-tuning noise only)"
        )
        + " on the demo "
        "datalist's unlabelled pool + training images (labels unused): `pretrain_lrc.json` / `pretrain_moco.json` + "
        f"`demo_pretrain.json` ({args.pretrain_epochs or _demo_pretrain_epochs()} epochs, patch 96, batch 4 volumes "
        "x 4 slices x 2 views, superpixels min_size 50, elastic "
        "spacing 16 px; LRC: Adam 1e-4, tau 0.07, N = 100 points per region; MoCo: SGD 0.03, momentum 0.9, queue 512, "
        "m = 0.99). Fine-tuning: `train.json + demo.json` (the demo recipe: Adam lr 1e-3, Dice loss, best "
        f"validation Dice; {epochs_note}) "
        f"with `init` = random / moco / lrc / lrc_moco, {args.volumes} labelled volumes, "
        "`seed` = `subset_seed` = s (same seed, subset and pretrained models for every init of a seed: paired); "
        "test = 5 "
        "volumes never used for training, pretraining or model selection (`evaluate.json`: Dice and NSD at the "
        "FLARE22 per-organ tolerances on each case's original grid; FLARE/MONAI convention: an organ predicted but "
        "absent from a case's ground truth scores 0, one absent from both is left out of that case's mean).",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: `nproc` = {len(os.sched_getaffinity(0))}, CPU `{_cpu_model()}`, no GPU (fp32); torch threads "
        f"{', '.join(str(t) for t in threads if t)}; shared with other jobs (1-min load {load:.1f} at writing), "
        "wall times indicative only",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}",
        f"- command: `{command}`",
        *[f"- {LABELS[r['init']]}, seed {r['seed']}: {r['note']}" for rs in runs.values() for r in rs if r.get("note")],
        "",
        "## Table 4.2 shape: test mean Dice / NSD after fine-tuning (mean ± std over seeds)",
        "",
        "| init | seeds | test mean Dice | test mean NSD (FLARE22 tolerances) | Δ Dice vs random (paired, "
        "mean ± std) | Wilcoxon p (Dice vs random) | wall / run (min) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rand = {r["seed"]: r for r in runs.get("random", [])}
    for init in INITS:
        rs = runs.get(init, [])
        if not rs:
            continue
        diffs = [
            r["overall"]["dice"]["mean"] - rand[r["seed"]]["overall"]["dice"]["mean"] for r in rs if r["seed"] in rand
        ]
        delta = "—" if init == "random" else (f"{_fmt(diffs)} (n={len(diffs)})" if diffs else "n/a")
        p = "—" if init == "random" else _wilcoxon(diffs)
        lines.append(
            f"| {LABELS[init]} | {len(rs)} | {_fmt([r['overall']['dice']['mean'] for r in rs])} | "
            f"{_fmt([r['overall']['nsd']['mean'] for r in rs])} | {delta} | {p} | "
            f"{_fmt([r['wall_s'] / 60 for r in rs], 1)} |"
        )
    lines += (
        ["", "Reading (written by this script from the table above):", ""]
        + _reading(runs, rand)
        + [
            "",
            "Per seed (test mean Dice):",
            "",
            "| seed | " + " | ".join(LABELS[i] for i in INITS) + " |",
            "|---:|" + "---:|" * len(INITS),
        ]
    )
    for s in seeds:
        cells = []
        for init in INITS:
            r = next((r for r in runs.get(init, []) if r["seed"] == s), None)
            cells.append(f"{r['overall']['dice']['mean']:.4f}" if r else "—")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Table 4.1 shape: do the LRC embeddings find the superpixels?",
        "",
        "k-means (k = the slice's number of superpixels) on the pixel embeddings of held-out slices (10 from each "
        "of the 5 validation volumes) vs their Felzenszwalb superpixels, body pixels only; mean ± std over slices.",
        "",
        "| pretraining seed | model | AMI | ARI | slices | regions / slice |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for p in pre:
        for name in ("LRC", "random init."):
            c = p["clusters"][name]
            lines.append(
                f"| {p['seed']} | {name} | {c['ami_mean']:.3f} ± {c['ami_std']:.3f} | "
                f"{c['ari_mean']:.3f} ± {c['ari_std']:.3f} | {c['slices']} | {c['regions_mean']:.1f} |"
            )
    lines += [
        "",
        "Thesis (Abdomen-1K): AMI 0.791, ARI 0.794.",
        "",
        "Pretraining runs:",
        "",
        "| pretraining seed | LRC iterations | LRC last loss | MoCo iterations | MoCo last loss | wall (min) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for p in pre:
        lrc, moco = p["steps"][0], p["steps"][1]
        lines.append(
            f"| {p['seed']} | {lrc['iterations']} | {lrc['last_losses'].get('loss_lrc', math.nan):.3f} | "
            f"{moco['iterations']} | {moco['last_losses'].get('loss_moco', math.nan):.3f} | {p['wall_s'] / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--pretrain-seeds",
        type=int,
        nargs="+",
        default=None,
        help="default: one pretraining per seed (seed s fine-tunes from pretraining s); fewer seeds are shared",
    )
    ap.add_argument("--inits", nargs="+", default=["lrc_moco", "random", "lrc", "moco"], choices=INITS)
    ap.add_argument("--volumes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--parallel", type=int, default=1, help="runs at a time (pretraining: LRC and MoCo; fine-tuning: inits)"
    )
    ap.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: demo.json's 40)")
    ap.add_argument(
        "--pretrain-epochs", type=int, default=None, help="pretraining epochs (default: demo_pretrain.json's)"
    )
    ap.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "monai_contrastive_bench_lrc_quality"))
    ap.add_argument("--demo-dir", default=None)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "lrc_pretraining_quality.md"))
    args = ap.parse_args()
    args.work_dir = os.path.abspath(args.work_dir)
    args.demo_dir = os.path.abspath(args.demo_dir or os.path.join(args.work_dir, "demo_data"))
    os.makedirs(args.work_dir, exist_ok=True)
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    pre, runs = [], {i: [] for i in INITS}
    if args.pretrain_seeds is None:
        args.pretrain_seeds = list(args.seeds)
    if not args.report_only:
        generate_ct_demo(args.demo_dir)
    for ps in args.pretrain_seeds:
        path = os.path.join(args.work_dir, f"pretrain_seed{ps}.json")
        if args.report_only:
            if os.path.isfile(path):
                with open(path) as f:
                    pre.append(json.load(f))
            continue
        pre.append(pretrain(ps, args))
    if not pre:
        raise SystemExit("no pretraining finished")
    for seed in args.seeds:
        if args.report_only:
            for init in args.inits:
                path = os.path.join(args.work_dir, f"{init}_seed{seed}.json")
                if os.path.isfile(path):
                    with open(path) as f:
                        runs[init].append(json.load(f))
            continue
        by_seed = {p["seed"]: p for p in pre}
        own = by_seed.get(seed, pre[seed % len(pre)])
        for init, m in finetune_seed(args.inits, seed, own, args).items():
            runs[init].append(m)
        with open(args.out, "w") as f:  # the report after every seed: partial results stay visible and paired
            f.write(write_report(pre, runs, args, command))
    with open(args.out, "w") as f:
        f.write(write_report(pre, runs, args, command))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Run each bundle's demo (``monai-contrastive demo NAME``, README command 1 for the BMD bundle) from a fresh copy
of the bundle and record what it scores on data that neither training nor checkpoint selection saw.

For every bundle the run's own result files are read (never the console): the regression demos write
``val_metrics.json`` (the selection set: the best checkpoint is chosen on it) and ``heldout_test_metrics.json``
(the best checkpoint on the demo data's test split); the segmentation demos write ``eval/seg_metrics.json``
(test volumes). The wall time of the whole command (demo data generation included) and the machine's load are
recorded, since timings on a loaded machine are not timings on an idle one.

    python benchmarks/bench_demos.py                              # every bundle below
    python benchmarks/bench_demos.py --bundles adacon_bmd_xray    # one bundle; the others' rows are kept

Writes ``benchmarks/results/demos.json`` (per bundle) and ``demos.md``.
"""

from __future__ import annotations

import argparse
import glob
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
sys.path.insert(0, HERE)
from bench_lrc_baseline import _cpu_model  # noqa: E402

REGRESSION = ("adacon_bmd_xray", "adacon_lvef_echo")
SEGMENTATION = ("lrc_multiorgan_ct", "clef_ct", "dcc_multiphase_ct")
DEMO_TARGET_MIN = 10  # the CT demos' issues: "in <= 10 minutes on 2 CPU cores"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--", "monai_contrastive", "bundles"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("+uncommitted" if dirty else "")
    except OSError:
        return "unknown"


def _one(path_glob: str) -> str:
    found = sorted(glob.glob(path_glob, recursive=True))
    if len(found) != 1:
        raise SystemExit(f"expected one file {path_glob}, found {found}")
    return found[0]


def _collect(name: str, root: str) -> dict:
    if name in REGRESSION:
        with open(_one(os.path.join(root, "models", "**", "val_metrics.json"))) as f:
            val = json.load(f)
        with open(_one(os.path.join(root, "models", "**", "heldout_test_metrics.json"))) as f:
            test = json.load(f)
        return {
            "task": "regression",
            "selection_set_best": {k: v for k, v in val.get("best_checkpoint", {}).items() if k != "path"},
            "test": test["test"],
            "r2_target": test.get("r2_target"),
            "training": val.get("training", {}),
        }
    with open(os.path.join(root, "eval", "seg_metrics.json")) as f:
        seg = json.load(f)
    coarse = {}
    coarse_path = os.path.join(root, "eval", "coarse", "seg_metrics.json")
    if os.path.isfile(coarse_path):  # DCC-CL: the coarse stage's own test score (its masks guide the fine stage)
        with open(coarse_path) as f:
            c = json.load(f)
        coarse = {"coarse_test": {"n_cases": c["n_cases"], "dice": c["overall"]["dice"], "nsd": c["overall"]["nsd"]}}
    return {
        **coarse,
        "task": "segmentation",
        "test": {
            "n_cases": seg["n_cases"],
            "dice": seg["overall"]["dice"],
            "nsd": seg["overall"]["nsd"],
            "nsd_tolerance_mm": seg["nsd_tolerance_mm"],
            "phases": {
                phase: {"n_cases": v["n_cases"], "dice": v["overall"]["dice"]}
                for phase, v in (seg.get("phases") or {}).items()
            },
        },
    }


def run_demo(name: str, work: str, threads: int | None) -> dict:
    root = os.path.join(work, name)
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(
        os.path.join(ROOT, "bundles", name),
        root,
        ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data", "cache", ".cache"),
    )
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "monai_contrastive.cli", "demo", root]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()[0]
    with open(os.path.join(work, f"{name}.log"), "w") as f:
        f.write(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode:
        raise SystemExit(
            f"demo {name} failed (rc {proc.returncode}); log: {os.path.join(work, name + '.log')}\n"
            + proc.stderr[-3000:]
        )
    out = _collect(name, root)
    out.update(
        {
            "wall_s": round(wall, 1),
            "load_average_1min": [round(load0, 2), round(load1, 2)],
            "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
            "commit": _commit(),
            "command": f"monai-contrastive demo {name}",
        }
    )
    return out


def _fmt(s: dict) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f}" if isinstance(s, dict) else f"{s:.3f}"


def write_report(results: dict, path: str, argv: list[str]) -> None:
    meta = results["_machine"]
    lines = [
        "# Demo runs: scores on held-out data",
        "",
        "Each bundle's `monai-contrastive demo NAME`, run from a fresh copy of the bundle on the embedded synthetic "
        "data (generation included in the wall time). Scores are read from the files the run wrote. *Test* = data "
        "that neither training nor checkpoint selection saw; the regression demos also report the selection set "
        "(validation: the best checkpoint is chosen on it, so that score is optimistic).",
        "",
        f"- machine: {meta['nproc']} CPU cores (`{meta['cpu']}`), no GPU; Python {meta['python']}, "
        f"torch {meta['torch']}, monai {meta['monai']}",
        f"- command: `python {results.get('_command') or ' '.join([os.path.relpath(sys.argv[0], ROOT)] + argv)}`",
        "",
        "## Regression demos",
        "",
        "| bundle | test MAE | test RMSE | test R² | test items | R² ≥ 0.6 on test | selection-set R² (best) "
        "| wall time "
        "| load (start/end) | commit | date |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|---|---|",
    ]
    for name in REGRESSION:
        r = results.get(name)
        if not r:
            continue
        t = r["test"]
        reached = r.get("r2_target") or {}
        lines.append(
            f"| {name} | {t['mae']:.4f} | {t['rmse']:.4f} | {t['r2']:.3f} | {t['n']} | "
            f"{'yes' if reached.get('reached') else 'no'} | "
            f"{r['selection_set_best'].get('val_r2', float('nan')):.3f} | "
            f"{r['wall_s'] / 60:.1f} min | {r['load_average_1min'][0]:.1f}/{r['load_average_1min'][1]:.1f} | "
            f"{r['commit']} | {r['date']} |"
        )
    lines += [
        "",
        "## Segmentation demos",
        "",
        "Mean over test volumes of each volume's mean over the organs in its ground truth or its prediction "
        "(FLARE/MONAI convention: a predicted organ that the ground truth lacks scores 0), ± std over volumes; NSD at "
        "the tolerances the bundle's evaluation uses (FLARE22's per-organ values for the CT bundles).",
        "",
        "| bundle | test mean Dice | test mean NSD | test volumes | test mean Dice per phase (volumes) | wall time "
        f"| ≤ {DEMO_TARGET_MIN} min | load (start/end) | commit | date |",
        "|---|---:|---:|---:|---|---:|---|---|---|---|",
    ]
    coarse_rows = []
    for name in SEGMENTATION:
        r = results.get(name)
        if not r:
            continue
        t = r["test"]
        if "coarse_test" in r:
            coarse_rows.append(
                f"| {name} | {_fmt(r['coarse_test']['dice'])} | {_fmt(r['coarse_test']['nsd'])} | "
                f"{r['coarse_test']['n_cases']} | {_fmt(t['dice'])} |"
            )
        phases = "; ".join(
            f"{phase} {v['dice']['mean']:.3f} ({v['n_cases']})" for phase, v in sorted(t.get("phases", {}).items())
        )
        lines.append(
            f"| {name} | {_fmt(t['dice'])} | {_fmt(t['nsd'])} | {t['n_cases']} | {phases or '—'} | "
            f"{r['wall_s'] / 60:.1f} min | {'yes' if r['wall_s'] <= DEMO_TARGET_MIN * 60 else 'no'} | "
            f"{r['load_average_1min'][0]:.1f}/{r['load_average_1min'][1]:.1f} | {r['commit']} | {r['date']} |"
        )
    if coarse_rows:
        lines += [
            "",
            "Coarse stage on its own (DCC-CL: the whole-volume 3D network whose masks are the fine stage's attention "
            "maps), same test volumes:",
            "",
            "| bundle | coarse test mean Dice | coarse test mean NSD | test volumes | final (fine) test mean Dice |",
            "|---|---:|---:|---:|---:|",
            *coarse_rows,
        ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    import monai
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundles", nargs="+", default=list(REGRESSION + SEGMENTATION))
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the demo runs")
    ap.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "monai_contrastive_bench_demos"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "demos.md"))
    ap.add_argument("--report-only", action="store_true", help="rewrite the markdown from the JSON, run nothing")
    ap.add_argument(
        "--collect-only",
        action="store_true",
        help="re-read the scores of --bundles from the files their last run left in --work-dir (no run)",
    )
    args = ap.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    json_path = os.path.splitext(args.out)[0] + ".json"
    results = {}
    if os.path.isfile(json_path):
        with open(json_path) as f:
            results = json.load(f)
    results["_machine"] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
    }
    if args.report_only:
        write_report(results, args.out, sys.argv[1:])
        return
    if args.collect_only:
        for name in args.bundles:
            results[name].update(_collect(name, os.path.join(args.work_dir, name)))
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)
        write_report(results, args.out, sys.argv[1:])
        return
    results["_command"] = " ".join(["benchmarks/bench_demos.py"] + sys.argv[1:])
    for name in args.bundles:
        print(f"== demo {name}", flush=True)
        results[name] = run_demo(name, args.work_dir, args.threads)
        print(json.dumps(results[name], indent=1), flush=True)
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)
        write_report(results, args.out, sys.argv[1:])
    print(f"wrote {args.out} and {json_path}")


if __name__ == "__main__":
    main()

"""Where the lrc_multiorgan_ct bundle's CPU inference spends its time, and which CPU setting changes it.

The network and inferer come from the bundle's ``inference.json`` (``monai.bundle.ConfigParser``; random weights,
``torch.manual_seed(0)``). The input is a stack of ``--slices`` axial slices of ``--size`` pixels, the shape of a
256 x 256 x 53 volume of 0.78 mm after resampling to 1 x 1 x 2.5 mm (200 x 200 per slice; the whole volume has 58
slices, and time grows linearly with slices).

1. Settings of the forward pass through the configured ``SliceInferer`` (patch 256, overlap 0.25): torch threads,
   ``sw_batch_size``, ``torch.no_grad`` (MONAI's evaluator) vs ``torch.inference_mode``, channels-last weights and
   input. Configurations interleaved round by round; median and p10-p90 over ``--repeats`` rounds; each output is
   compared with the default's (max abs difference of the logits, fraction of equal argmax labels).
2. ``torch.profiler`` of one default forward pass: time per operator.
3. Postprocessing of ``inference.json`` on the inferer's output, transform by transform (softmax, ``Invertd``,
   argmax), on a volume whose preprocessing resampled it.

    python benchmarks/bench_lrc_cpu_inference.py --out benchmarks/results/lrc_cpu_inference.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import monai  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402

BUNDLE = os.path.join(ROOT, "bundles", "lrc_multiorgan_ct")


def _quantile(v: list[float], q: float) -> float:
    v = sorted(v)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def _parser(**overrides) -> ConfigParser:
    p = ConfigParser()
    p.read_config(os.path.join(BUNDLE, "configs", "inference.json"))
    p["bundle_root"] = BUNDLE
    p["device"] = "$torch.device('cpu')"
    for k, v in overrides.items():
        p[k] = v
    return p


def forward_settings(args) -> tuple[list[dict], dict]:
    torch.manual_seed(0)
    base = _parser()
    net = base.get_parsed_content("network_def").eval()
    net_cl = base.get_parsed_content("network_def")
    net_cl.load_state_dict(net.state_dict())
    net_cl = net_cl.to(memory_format=torch.channels_last).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, args.size, args.size, args.slices, generator=g)
    default_sw = int(base["sw_batch_size"])

    class ChannelsLast(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, t):
            return self.m(t.contiguous(memory_format=torch.channels_last))

    configs = {}
    for threads in args.threads:
        for sw in sorted({default_sw, *args.sw_batch_sizes}):
            configs[f"threads {threads}, sw_batch_size {sw}, no_grad"] = (threads, sw, net, torch.no_grad)
        configs[f"threads {threads}, sw_batch_size {default_sw}, inference_mode"] = (
            threads,
            default_sw,
            net,
            torch.inference_mode,
        )
        configs[f"threads {threads}, sw_batch_size {default_sw}, no_grad, channels-last"] = (
            threads,
            default_sw,
            ChannelsLast(net_cl),
            torch.no_grad,
        )
    default_name = f"threads {args.threads[0]}, sw_batch_size {default_sw}, no_grad"
    inferers = {sw: _parser(sw_batch_size=sw).get_parsed_content("inferer") for sw in {c[1] for c in configs.values()}}

    def run(name):
        threads, sw, model, ctx = configs[name]
        torch.set_num_threads(threads)
        with ctx():
            return inferers[sw](x, model)

    outs = {name: run(name) for name in configs}  # also the warm-up
    ref = outs[default_name]
    times = {name: [] for name in configs}
    names = list(configs)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            run(name)
            times[name].append(time.perf_counter() - t0)
    rows = []
    for name in names:
        t = times[name]
        rows.append(
            {
                "config": name,
                "median_s": statistics.median(t),
                "p10_s": _quantile(t, 0.1),
                "p90_s": _quantile(t, 0.9),
                "s_per_slice": statistics.median(t) / args.slices,
                "max_abs_logit_diff": float((outs[name] - ref).abs().max()),
                "argmax_equal": float((outs[name].argmax(1) == ref.argmax(1)).float().mean()),
                "times_s": t,
            }
        )
        print(f"[forward] {name}: {rows[-1]['median_s']:.2f} s", flush=True)
    torch.set_num_threads(args.threads[0])
    with torch.profiler.profile() as prof, torch.no_grad():
        inferers[default_sw](x, net)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]
    profile = {
        "total_s": total / 1e6,
        "ops": [
            {"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total} for e in ops
        ],
    }
    return rows, profile


def postprocessing(args) -> list[dict]:
    """The configured postprocessing transforms one by one on a (14, size, size, slices) prediction of a volume
    resampled from 0.78 x 0.78 x 2.75 mm (256 x 256 x 53)."""
    import nibabel as nib
    import numpy as np

    torch.set_num_threads(args.threads[0])
    tmp = os.path.join(args.work_dir, "vol.nii.gz")
    os.makedirs(args.work_dir, exist_ok=True)
    affine = np.diag([0.78, 0.78, 2.75, 1.0])
    vol = np.random.default_rng(0).integers(-1000, 1000, size=(256, 256, 53)).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, affine), tmp)
    p = _parser(output_dir=os.path.join(args.work_dir, "out"))
    data = p.get_parsed_content("preprocessing")({"image": tmp})
    shape = data["image"].shape[1:]
    data["pred"] = monai.data.MetaTensor(torch.randn(14, *shape), meta=data["image"].meta)
    rows = []
    for t in p.get_parsed_content("postprocessing").transforms:
        name = type(t).__name__
        t0 = time.perf_counter()
        data = t(data)
        rows.append({"transform": name, "seconds": time.perf_counter() - t0, "pred_shape": list(data["pred"].shape)})
        print(f"[post] {name}: {rows[-1]['seconds']:.2f} s", flush=True)
    rows.insert(0, {"transform": "(resampled input)", "seconds": float("nan"), "pred_shape": [14, *shape]})
    return rows


def _secs(x: float) -> str:
    return "" if x != x else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int, default=8, help="slices per forward run (the whole volume has 58)")
    ap.add_argument("--size", type=int, default=200, help="slice size after resampling")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch threads (first = default)")
    ap.add_argument("--sw-batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--work-dir", default="/tmp/bench_lrc_cpu_inference")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "lrc_cpu_inference.md"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    post = postprocessing(args)
    rows, profile = forward_settings(args)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    cpu = "unknown"
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), cpu)
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/bench_lrc_cpu_inference.py " + " ".join(sys.argv[1:]),
        "commit": commit.strip(),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "load_start": load0,
        "load_end": os.getloadavg()[0],
        "elapsed_s": time.perf_counter() - t0,
        "versions": f"python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}",
        "slices": args.slices,
        "size": args.size,
        "repeats": args.repeats,
    }
    lines = [
        "# lrc_multiorgan_ct: CPU inference, where the time goes",
        "",
        f"- date: {meta['date']}; wall time {meta['elapsed_s']:.0f} s; commit {meta['commit']}",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['nproc']} cores, `{cpu}`; 1-min load average {load0:.2f} at start, "
        f"{meta['load_end']:.2f} at end (shared with other jobs)",
        f"- {meta['versions']}",
        f"- input: {args.slices} slices of {args.size} x {args.size} (a 256 x 256 x 53 volume of 0.78 x 0.78 x 2.75 mm "
        "is 200 x 200 x 58 after resampling); `inference.json`'s network (random weights) and `SliceInferer`",
        "",
        "## 1. Forward pass settings",
        "",
        f"Interleaved rounds, median and p10-p90 over {args.repeats}; output compared with the first row's.",
        "",
        "| configuration | median s | p10-p90 s | s per slice | max abs logit diff | equal argmax |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['median_s']:.2f} | {r['p10_s']:.2f}-{r['p90_s']:.2f} | {r['s_per_slice']:.3f} | "
            f"{r['max_abs_logit_diff']:.2e} | {r['argmax_equal'] * 100:.4f} % |"
        )
    lines += ["", "## 2. Operators of one default forward pass (torch.profiler, self CPU time)", ""]
    lines += ["| operator | self s | share |", "|---|---:|---:|"]
    lines += [f"| `{o['op']}` | {o['self_s']:.2f} | {o['share'] * 100:.1f} % |" for o in profile["ops"]]
    lines += ["", "## 3. Postprocessing, transform by transform (one volume)", ""]
    lines += ["| transform | seconds | `pred` shape after |", "|---|---:|---|"]
    lines += [f"| {r['transform']} | {_secs(r['seconds'])} | " f"{'x'.join(map(str, r['pred_shape']))} |" for r in post]
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"meta": meta, "forward": rows, "profile": profile, "postprocessing": post}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()

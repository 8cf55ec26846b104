"""Speed and memory of CLEF's pretraining (Kuleshov et al., FLARE 2022) on this machine.

1. Losses, forward + backward, vectorised (``monai_contrastive.losses``) vs the best plain loop:
   - discriminativeness (eq. 1): the loop takes one anchor at a time and does everything for that anchor as one
     vectorised op over its leaves (inner products, mm distances, mask, hinge), i.e. ``A`` iterations;
   - equivariance (eq. 2): the loop takes one axial slice at a time (cosine and valid-voxel sum of the slice as one
     op), i.e. ``S`` iterations; a loop per voxel would be a strawman.
   Interleaved repeats after a warm-up; median and spread.
2. One pretraining step (both forwards of eq. 2, the three losses, backward, Adam) of the bundle's default network
   (33.28 M parameters) or another width, at several cube sizes: seconds per step and peak RSS, each size in its
   own process (peak RSS is a per-process high-water mark), with and without gradient checkpointing.

    python benchmarks/bench_clef_speed.py --out benchmarks/results/clef_speed.md

GPU: pass ``--device cuda`` to measure step time and peak GPU memory with AMP (the issue's targets: a 192^3 step in
<= 16 GB; inference of one case in <= 4 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
from bench_lrc_baseline import _cpu_model  # noqa: E402

from monai_contrastive.losses import (  # noqa: E402
    DecodingLoss,
    DiscriminativenessLoss,
    EquivarianceLoss,
)
from monai_contrastive.losses.clef import voxel_coordinates_mm  # noqa: E402
from monai_contrastive.networks import CLEFNet, CLEFSegNet  # noqa: E402
from monai_contrastive.networks.clef import CLEF_UNET_FEATURES  # noqa: E402
from monai_contrastive.transforms.ct import RandCLEFAffine  # noqa: E402


def loop_discriminativeness(features, spacing, anchors, leaves, min_mm=10.0, margin=-0.9):
    """Eq. 1 with one vectorised op per anchor (mean over far pairs per sample, then over samples)."""
    b, c, *spatial = features.shape
    flat = features.reshape(b, c, -1)
    values = []
    for s in range(b):
        f_l = F.normalize(flat[s][:, leaves[s]], dim=0)  # (C, L)
        # anchors gathered once: indexing the full map per anchor would add a full-size gradient per anchor
        f_all = F.normalize(flat[s][:, anchors[s]], dim=0).unbind(1)
        p_l = voxel_coordinates_mm(leaves[s][None], tuple(spatial), spacing[s][None])[0]  # (L, 3)
        p_a = voxel_coordinates_mm(anchors[s][None], tuple(spatial), spacing[s][None])[0]
        total, count = features.new_zeros(()), 0
        for i, f_a in enumerate(f_all):
            far = ((p_l - p_a[i]) ** 2).sum(1) >= min_mm**2
            total = total + (torch.relu(margin + f_a @ f_l) * far).sum()
            count += int(far.sum())
        if count:
            values.append(total / count)
    return torch.stack(values).mean()


def loop_equivariance(warped, of_warped, valid):
    """Eq. 2 with one vectorised op per slice of the first spatial axis."""
    b = warped.shape[0]
    values = []
    for s in range(b):
        total, count = warped.new_zeros(()), warped.new_zeros(())
        # unbind once: indexing the full map per slice would add a full-size gradient per slice
        for w_k, o_k, v_k in zip(warped[s].unbind(1), of_warped[s].unbind(1), valid[s, 0].unbind(0)):
            cos = (F.normalize(w_k, dim=0) * F.normalize(o_k, dim=0)).sum(0)
            v = (v_k > 0.5).to(cos.dtype)
            total = total - (cos * v).sum()
            count = count + v.sum()
        values.append(total / count.clamp_min(1))
    return torch.stack(values).mean()


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _stats(ts: list[float]) -> dict:
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "n": len(ts)}


def bench_losses(args) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = []
    spacing = torch.tensor([[1.9, 1.9, 2.3]])
    cases = [(64, 2048, 64), (256, 8192, 96)][: len(args.loss_sizes)]
    for (a, l_, _), size in zip(cases, args.loss_sizes):
        feats = torch.randn(1, 32, size, size, size, generator=g, requires_grad=True)
        n = size**3
        anchors, leaves = torch.randint(0, n, (1, a), generator=g), torch.randint(0, n, (1, l_), generator=g)
        loss = DiscriminativenessLoss(num_anchors=a, num_leaves=l_)

        def vec():
            loss.pair_loss(feats, spacing, anchors, leaves)[0].backward()

        def loop():
            loop_discriminativeness(feats, spacing, anchors, leaves).backward()

        check = float(loss.pair_loss(feats, spacing, anchors, leaves)[0])
        assert abs(check - float(loop_discriminativeness(feats, spacing, anchors, leaves))) < 1e-4 * max(1, check)
        rows.append(_compare(f"discriminativeness A={a}, L={l_}, C=32, {size}^3", vec, loop, args.repeats))
    for size in args.loss_sizes:
        w = torch.randn(1, 32, size, size, size, generator=g, requires_grad=True)
        o = torch.randn(1, 32, size, size, size, generator=g, requires_grad=True)
        valid = (torch.rand(1, 1, size, size, size, generator=g) > 0.2).float()
        eq = EquivarianceLoss()
        assert abs(float(eq(w, o, valid)) - float(loop_equivariance(w, o, valid))) < 1e-4
        rows.append(
            _compare(
                f"equivariance C=32, {size}^3",
                lambda: eq(w, o, valid).backward(),
                lambda: loop_equivariance(w, o, valid).backward(),
                args.repeats,
            )
        )
    return rows


def _compare(name, vec, loop, repeats) -> dict:
    vec(), loop()  # warm-up
    tv, tl = [], []
    for _ in range(repeats):  # interleaved, so that other load hits both alike
        tv += _time(vec, 1)
        tl += _time(loop, 1)
    v, lp = _stats(tv), _stats(tl)
    return {"case": name, "vectorised": v, "loop": lp, "speedup": lp["median_s"] / v["median_s"]}


def step_worker(size: int, features: list[int], checkpointing: bool, repeats: int, device: str) -> dict:
    """One pretraining step at ``size``^3 (in this process), repeated; and one fine-tuning inference."""
    torch.manual_seed(0)
    dev = torch.device(device)
    amp = dev.type == "cuda"
    net = CLEFNet(feature_channels=32, features=features, gradient_checkpointing=checkpointing).to(dev)
    opt = torch.optim.Adam(net.parameters(), 4e-4)
    dec, disc, eq = DecodingLoss(), DiscriminativenessLoss(), EquivarianceLoss()
    x = torch.rand(1, 1, size, size, size, device=dev) * 2 - 1
    body = torch.ones_like(x)
    spacing = torch.tensor([[1.8, 1.8, 2.0]], device=dev)
    aff = RandCLEFAffine().set_random_state(0)

    def step():
        theta = aff(spatial_dims=3)[None].to(dev)
        with torch.autocast(dev.type, enabled=amp):
            out = net(x, theta=theta)
            total = dec(out["decoded"], x) + disc(out["embedding"], body, spacing)[0]
            total = total + eq(out["warped_embedding"], out["embedding_of_warped"], out["warp_valid"])
        opt.zero_grad()
        total.backward()
        opt.step()
        if amp:
            torch.cuda.synchronize()

    if amp:
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up
    times = _time(step, repeats)
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if amp else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    seg = CLEFSegNet(features=features).to(dev).eval()
    if amp:
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad(), torch.autocast(dev.type, enabled=amp):
        seg(x)
    infer_gpu = torch.cuda.max_memory_allocated() / 2**20 if amp else None
    return {
        "size": size,
        "voxels": size**3,
        "checkpointing": checkpointing,
        "step": _stats(times),
        "peak_rss_mib": rss,
        "peak_gpu_mib": peak_gpu,
        "infer_peak_gpu_mib": infer_gpu,
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
    }


def bench_steps(args) -> list[dict]:
    rows = []
    for size in args.sizes:
        for ckpt in args.checkpointing:
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--worker",
                json.dumps({"size": size, "features": args.features, "checkpointing": ckpt}),
                "--repeats",
                str(args.step_repeats),
                "--device",
                args.device,
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
            if res.returncode != 0:
                rows.append({"size": size, "checkpointing": ckpt, "error": res.stderr.strip().splitlines()[-1:]})
            else:
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    return rows


def _git(*a) -> str:
    try:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def write(args, losses, steps, load0, load1) -> None:
    params = {
        "default_backbone_m": sum(p.numel() for p in CLEFSegNet().backbone.parameters()) / 1e6,
        "paper_m": 33.0,
    }
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": _git("rev-parse", "--short", "HEAD") + (" (dirty)" if _git("status", "--porcelain") else ""),
        "command": " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
        "load_avg_1min": [load0, load1],
        "device": args.device,
    }
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"env": env, "parameters": params, "losses": losses, "steps": steps}, f, indent=2)
    lines = [
        "# CLEF speed and memory",
        "",
        f"{env['date']}, commit {env['commit']}, `{env['command']}`; {env['cpu']}, torch {env['torch']} with "
        f"{env['torch_threads']} threads, device {args.device}; **shared machine**: 1-min load average {load0:.1f} at "
        f"start, {load1:.1f} at the end on 2 cores, so absolute times are inflated; speed-ups compare interleaved "
        "runs under the same load.",
        "",
        f"Parameters: the default backbone (MONAI BasicUNet widths {list(CLEF_UNET_FEATURES)}) has "
        f"{params['default_backbone_m']:.2f} M parameters; the paper reports 33.0 M (Table 2).",
        "",
        "## Losses, forward + backward (vectorised vs the best plain loop)",
        "",
    ]
    if not losses:
        lines.append("Not run here (`--skip_losses`): see `clef_speed_losses.md`.")
    else:
        lines += [
            f"Warm-up 1, then {args.repeats} interleaved repeats; median (min-max) seconds.",
            "",
            "| case | vectorised s | loop s | speed-up |",
            "|---|---:|---:|---:|",
        ]
    for r in losses:
        v, lp = r["vectorised"], r["loop"]
        lines.append(
            f"| {r['case']} | {v['median_s']:.4f} ({v['min_s']:.4f}-{v['max_s']:.4f}) | {lp['median_s']:.4f} "
            f"({lp['min_s']:.4f}-{lp['max_s']:.4f}) | {r['speedup']:.1f}x |"
        )
    if losses:
        lines += [
            "",
            "The discriminativeness loop does one vectorised op per anchor (all its leaves at once); the equivariance "
            "loop one per slice. Both give the vectorised value (checked in the script).",
        ]
    lines += [
        "",
        f"## Pretraining step (both forwards of eq. 2, three losses, backward, Adam), widths {args.features}",
        "",
        f"Batch 1; warm-up 1, then {args.step_repeats} repeats; each row its own process (peak RSS = that process's "
        "high-water mark, model and optimiser included).",
        "",
        "| size | voxels | checkpointing | s/step median (min-max) | peak RSS MiB | peak GPU MiB (step / inference) |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in steps:
        if "error" in r:
            lines.append(f"| {r['size']}^3 | | {r['checkpointing']} | failed: {r['error']} | | |")
            continue
        s = r["step"]
        gpu = f"{r['peak_gpu_mib']:.0f} / {r['infer_peak_gpu_mib']:.0f}" if r["peak_gpu_mib"] is not None else "n/a"
        lines.append(
            f"| {r['size']}^3 | {r['voxels']:,} | {r['checkpointing']} | {s['median_s']:.2f} ({s['min_s']:.2f}-"
            f"{s['max_s']:.2f}) | {r['peak_rss_mib']:.0f} | {gpu} |"
        )
    ok = [r for r in steps if "error" not in r and not r["checkpointing"]]
    if len(ok) >= 2:
        a, b = ok[0], ok[-1]
        slope = (b["peak_rss_mib"] - a["peak_rss_mib"]) / (b["voxels"] - a["voxels"]) * 1e6
        lines += [
            "",
            f"Memory growth without checkpointing: {a['peak_rss_mib']:.0f} MiB at {a['size']}^3 -> "
            f"{b['peak_rss_mib']:.0f} MiB at {b['size']}^3, about {slope:.0f} MiB per million voxels (linear in the "
            "voxel count: activations dominate; the parameters and Adam state are a constant).",
        ]
    if args.device == "cpu":
        lines += [
            "",
            "GPU targets (a 192^3 pretraining step with AMP in <= 16 GB; inference of one case in <= 4 GB) are "
            "pending: no GPU was available to this run (`--device cuda` measures them).",
        ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(HERE, "results", "clef_speed.md"))
    p.add_argument("--repeats", type=int, default=7, help="loss repeats (and step repeats of a worker)")
    p.add_argument("--step_repeats", type=int, default=5)
    p.add_argument("--sizes", type=int, nargs="*", default=[64, 96, 128])
    p.add_argument("--features", type=int, nargs=6, default=list(CLEF_UNET_FEATURES))
    p.add_argument("--checkpointing", type=int, nargs="+", default=[0, 1], help="0 without, 1 with")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip_losses", action="store_true")
    p.add_argument(
        "--loss_sizes",
        type=int,
        nargs="+",
        default=[64, 96],
        help="feature-map sizes of the loss cases (first: 64 anchors / 2048 leaves, second: 256 / 8192)",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        w = json.loads(args.worker)
        print(json.dumps(step_worker(w["size"], w["features"], bool(w["checkpointing"]), args.repeats, args.device)))
        return
    load0 = os.getloadavg()[0]
    losses = [] if args.skip_losses else bench_losses(args)
    steps = bench_steps(args)
    write(args, losses, steps, load0, os.getloadavg()[0])


if __name__ == "__main__":
    main()

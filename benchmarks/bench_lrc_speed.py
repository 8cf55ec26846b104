"""Speed of the LRC + MoCo pretraining pieces (issue 13's speed goals), on this machine's CPU.

1. Superpixel cache: the deterministic part of ``pretrain_lrc.json``'s pipeline (load, resample to 1 x 1 x 2.5 mm,
   Felzenszwalb superpixels of every axial slice inside the body, window, crop to the body) through MONAI's
   ``PersistentDataset`` keyed by ``item_file_hash`` / ``transform_settings_hash``: slices/s on the first pass (cold:
   computes and writes the cache) and on later passes (warm: reads it). Target: warm >= 20x cold.
2. ``LocalRegionContrastLoss`` forward + backward at batch 8, 256 x 256, 64 channels, 64 regions per image, vs a
   plain loop over images and regions (the thesis's equation written out, as in ``tests/losses/test_lrc.py``).
3. MoCo step (query encoder forward/backward + key encoder forward + InfoNCE + SGD + EMA update + enqueue) vs the
   plain encoder step (query encoder forward/backward + SGD on the same batch).

    python benchmarks/bench_lrc_speed.py --out benchmarks/results/lrc_pretraining_speed.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone

import monai
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.data import PersistentDataset

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_lrc_baseline import _cpu_model  # noqa: E402

from monai_contrastive.data import generate_ct_demo, item_file_hash, load_image_items  # noqa: E402
from monai_contrastive.data.cache import transform_settings_hash  # noqa: E402
from monai_contrastive.losses import InfoNCELoss, LocalRegionContrastLoss  # noqa: E402
from monai_contrastive.networks import ContrastiveNet, FeatureUNet, MomentumContrastNet, ProjectionHead  # noqa: E402

BUNDLE = os.path.join(os.path.dirname(HERE), "bundles", "lrc_multiorgan_ct")


def bench_cache(args) -> dict:
    data_dir = os.path.join(args.work_dir, "ct")
    datalist = generate_ct_demo(
        data_dir, num_labelled=3, num_unlabelled=args.volumes, matrix=args.matrix, num_validation=1, num_test=1
    )
    items = load_image_items(datalist, "unlabelled")
    parser = ConfigParser()
    parser.read_config([os.path.join(BUNDLE, "configs", f) for f in ("pretrain_common.json", "pretrain_lrc.json")])
    parser["patch_size"] = 64
    transform = monai.transforms.Compose(parser.get_parsed_content("load_preprocessing"))
    cache = os.path.join(args.work_dir, "cache")
    shutil.rmtree(cache, ignore_errors=True)
    ds = PersistentDataset(items, transform, cache, hash_func=item_file_hash, hash_transform=transform_settings_hash)
    t0 = time.perf_counter()
    slices = sum(int(ds[i]["image"].shape[-1]) for i in range(len(ds)))
    cold = time.perf_counter() - t0
    warm_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        warm_times.append(time.perf_counter() - t0)
    warm = statistics.median(warm_times)
    shape = tuple(ds[0]["image"].shape)
    return {
        "volumes": len(items),
        "slices": slices,
        "shape_first": shape,
        "cold_s": cold,
        "warm_s": warm,
        "cold_slices_per_s": slices / cold,
        "warm_slices_per_s": slices / warm,
        "speedup": cold / warm,
    }


def _naive_loop_lrc(fq, fp, rq, rp, tau, n_points, generator):
    """The thesis's L_l written literally: one image, one region and one pair at a time (a ``nonzero`` and a gather
    per region, so every region's backward scatters into the whole batch's gradient)."""
    fq, fp = F.normalize(fq, dim=1), F.normalize(fp, dim=1)
    losses = []
    for b in range(fq.shape[0]):
        ids = [k for k in torch.unique(rq[b]).tolist() if k != 0 and bool((rp[b] == k).any())]
        mq, mp = {}, {}
        for k in ids:
            for f, r, out in ((fq, rq, mq), (fp, rp, mp)):
                idx = torch.nonzero(r[b, 0].reshape(-1) == k).squeeze(1)
                pick = idx[torch.randint(0, idx.numel(), (n_points,), generator=generator)]
                out[k] = f[b].reshape(f.shape[1], -1)[:, pick].mean(1)
        total = 0.0
        for k1 in ids:
            num = torch.exp(mq[k1] @ mp[k1] / tau)
            den = 0.0
            for k2 in ids:
                if k2 != k1:
                    den = den + torch.exp(mq[k1] @ mq[k2] / tau)
                den = den + torch.exp(mq[k1] @ mp[k2] / tau)
            total = total - torch.log(num / den)
        losses.append(total)
    return torch.stack(losses).mean()


def _per_image_lrc(fq, fp, rq, rp, tau, n_points, generator):
    """The best plain loop we can write: a loop over images only; per image the embeddings are normalised, every
    region's N points are drawn and gathered at once (pixels sorted by region, one gather per view), and the (K, K)
    logits and a log-sum-exp give all regions' terms. ``n_points=None`` averages every pixel (exact means)."""
    d = fq.shape[1]
    losses = []
    for b in range(fq.shape[0]):
        views = [(F.normalize(f[b], dim=0).reshape(d, -1), r[b].reshape(-1).long()) for f, r in ((fq, rq), (fp, rp))]
        ids = torch.unique(views[0][1])
        ids = ids[(ids != 0) & torch.isin(ids, views[1][1])]
        if ids.numel() < 2:
            continue
        means = []
        for f, r in views:
            counts = torch.bincount(r, minlength=int(ids.max()) + 1)
            if n_points is None:
                sums = torch.zeros(counts.shape[0], d, dtype=f.dtype).index_add_(0, r, f.t())
                means.append(sums[ids] / counts[ids].unsqueeze(1))
                continue
            order = torch.argsort(r)
            start = torch.cumsum(counts, 0) - counts
            n = counts[ids].unsqueeze(1)
            u = torch.rand(ids.numel(), n_points, generator=generator)
            pick = order[start[ids].unsqueeze(1) + torch.minimum((u * n).long(), n - 1)]  # (K, N)
            means.append(f[:, pick].mean(2).t())  # (K, D)
        mq, mp = means
        s_qp, s_qq = mq @ mp.t() / tau, mq @ mq.t() / tau
        s_qq = s_qq.masked_fill(torch.eye(ids.numel(), dtype=torch.bool), float("-inf"))
        denom = torch.logsumexp(torch.cat([s_qq, s_qp], dim=1), dim=1)
        losses.append((denom - s_qp.diagonal()).sum())
    return torch.stack(losses).mean()


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _spread(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": len(times)}


def bench_loss(args) -> dict:
    g = torch.Generator().manual_seed(0)
    b, d, h, w = 8, 64, 256, 256
    coarse = torch.arange(1, 65).reshape(1, 1, 8, 8).float()  # 64 regions per image
    rq = F.interpolate(coarse, size=(h, w), mode="nearest").long().repeat(b, 1, 1, 1)
    rp = torch.roll(rq, shifts=(5, 3), dims=(2, 3))  # a warp-like shift: regions keep their ids
    fq = torch.randn(b, d, h, w, generator=g, requires_grad=True)
    fp = torch.randn(b, d, h, w, generator=g, requires_grad=True)
    # the per-image loop computes the same loss: checked with exact region means (no sampling) before timing
    exact = LocalRegionContrastLoss(num_points=None)(fq, rq, fp, rp)
    looped = _per_image_lrc(fq, fp, rq, rp, 0.07, None, g)
    if not torch.allclose(exact, looped, rtol=1e-4, atol=1e-4):
        raise SystemExit(f"per-image loop {looped.item()} != LocalRegionContrastLoss {exact.item()}")
    loss = LocalRegionContrastLoss(num_points=100)

    def run(fn):
        def step():
            fq.grad = fp.grad = None
            fn().backward()

        return step

    vec = run(lambda: loss(fq, rq, fp, rp))
    per_image = run(lambda: _per_image_lrc(fq, fp, rq, rp, 0.07, 100, g))
    naive = run(lambda: _naive_loop_lrc(fq, fp, rq, rp, 0.07, 100, g))
    vec(), per_image()  # warm-up
    times_v, times_p, times_n = [], [], []
    for _ in range(args.repeats):  # interleaved, so that other load hits both alike
        times_v.append(_timed(vec))
        times_p.append(_timed(per_image))
    for _ in range(args.naive_repeats):
        times_n.append(_timed(naive))
    v, pi = _spread(times_v), _spread(times_p)
    out = {
        "shape": [b, d, h, w],
        "regions_per_image": 64,
        "num_points": 100,
        "exact_check": {"vectorised": exact.item(), "per_image_loop": looped.item()},
        "vectorised": v,
        "per_image_loop": pi,
        "speedup_vs_per_image_loop": pi["median_s"] / v["median_s"],
        "regions_used": loss.last_counts["regions"],
    }
    if times_n:
        out["naive_loop"] = _spread(times_n)
        out["speedup_vs_naive_loop"] = out["naive_loop"]["median_s"] / v["median_s"]
    return out


def bench_moco(args) -> dict:
    torch.manual_seed(0)
    batch, size = args.moco_batch, args.moco_size

    def encoder():
        return ContrastiveNet(
            FeatureUNet(2, 1, encoder_only=True), heads={"embedding": ProjectionHead(256, hidden_dim=0, out_dim=128)}
        )

    moco = MomentumContrastNet(encoder(), dim=128, queue_size=4096, momentum=0.999)
    plain = encoder()
    opt_m = torch.optim.SGD(moco.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    opt_p = torch.optim.SGD(plain.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    info = InfoNCELoss(0.07)
    x, x2 = torch.rand(batch, 1, size, size), torch.rand(batch, 1, size, size)

    def moco_step():
        opt_m.zero_grad()
        out = moco(x, key_input=x2)
        info(out["query"], out["key"], out["queue"]).backward()
        opt_m.step()
        moco.momentum_update()
        moco.enqueue(out["key"])

    def plain_step():
        opt_p.zero_grad()
        q = F.normalize(plain(x)["embedding"], dim=1)
        (q @ q.t()).mean().backward()
        opt_p.step()

    moco_step(), plain_step()
    tm, tp = [], []
    for _ in range(args.repeats):  # interleaved, so that other load hits both alike
        t0 = time.perf_counter()
        moco_step()
        tm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain_step()
        tp.append(time.perf_counter() - t0)
    m, p = statistics.median(tm), statistics.median(tp)
    return {"batch": batch, "size": size, "moco_s": m, "plain_s": p, "overhead": m / p - 1.0}


def _row(name: str, t: dict) -> str:
    return f"| {name} | {t['median_s']:.3f} | {t['min_s']:.3f}-{t['max_s']:.3f} | {t['repeats']} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--volumes", type=int, default=6)
    ap.add_argument("--matrix", type=int, default=320, help="in-plane matrix of the synthetic volumes")
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--naive-repeats", type=int, default=1, help="repeats of the naive per-region loop (0: skip it)")
    ap.add_argument("--moco-batch", type=int, default=16)
    ap.add_argument("--moco-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "monai_contrastive_bench_lrc_speed"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "lrc_pretraining_speed.md"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.work_dir, exist_ok=True)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    cache = bench_cache(args)
    print("cache", json.dumps(cache), flush=True)
    loss = bench_loss(args)
    print("loss", json.dumps(loss), flush=True)
    moco = bench_moco(args)
    print("moco", json.dumps(moco), flush=True)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()[0]
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    lines = [
        "# LRC + MoCo pretraining: speed (CPU)",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; wall time {wall / 60:.1f} min",
        f"- machine: `nproc` = {len(os.sched_getaffinity(0))}, CPU `{_cpu_model()}`, no GPU (fp32), torch threads "
        f"{torch.get_num_threads()}; **shared with other jobs**: 1-min load average {load0:.1f} at start, "
        f"{load1:.1f} at the end (2 cores), so absolute times are inflated; the ratios compare runs made under the "
        "same load",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}",
        f"- command: `{command}`",
        "",
        "## Superpixel cache (target: warm >= 20x cold)",
        "",
        f"{cache['volumes']} synthetic CT volumes (matrix {args.matrix}, first volume after preprocessing "
        f"{cache['shape_first']}), `pretrain_lrc.json`'s deterministic pipeline (superpixel settings "
        "min_size 400 and sigma 1 of the public code of Ouyang et al., scale 100 ours: the thesis gives none) "
        "through `PersistentDataset`; warm = median of "
        f"{args.repeats} passes.",
        "",
        "| pass | seconds | slices/s |",
        "|---|---:|---:|",
        f"| cold (compute + write) | {cache['cold_s']:.2f} | {cache['cold_slices_per_s']:.1f} |",
        f"| warm (read) | {cache['warm_s']:.3f} | {cache['warm_slices_per_s']:.1f} |",
        f"| **warm / cold** | | **{cache['speedup']:.1f}x** |",
        "",
        "The cold pass includes reading the NIfTI files and resampling as well as the superpixels; the warm reads came "
        "from the OS page cache, so from a cold disk add its read time.",
        "",
        "## LocalRegionContrastLoss forward + backward",
        "",
        f"Batch {loss['shape'][0]} x 2 views, {loss['shape'][1]} channels, {loss['shape'][2]} x {loss['shape'][3]}, "
        f"64 regions per image ({loss['regions_used']} used), N = 100 points per region.",
        "",
        "| implementation | median s per forward + backward | min-max | repeats |",
        "|---|---:|---:|---:|",
        _row("vectorised (`LocalRegionContrastLoss`)", loss["vectorised"]),
        _row("best plain loop: over images, one gather per view and image", loss["per_image_loop"]),
        *(
            [_row("naive loop: over images, regions and pairs (a gather per region)", loss["naive_loop"])]
            if "naive_loop" in loss
            else []
        ),
        "",
        f"**Speed-up against the best plain loop: {loss['speedup_vs_per_image_loop']:.2f}x**"
        + (
            f" (against the naive loop: {loss['speedup_vs_naive_loop']:.0f}x, which spends its time scattering "
            "zero-filled gradients over the whole batch for every region)."
            if "naive_loop" in loss
            else "."
        ),
        f"Both implementations compute the same loss: with exact region means (no sampling) the vectorised loss gives "
        f"{loss['exact_check']['vectorised']:.5f} and the per-image loop {loss['exact_check']['per_image_loop']:.5f}.",
        "",
        "## MoCo step overhead",
        "",
        f"Global encoder (BasicUNet encoder, instance norm) + pooled linear 128-d head, batch {moco['batch']}, "
        f"{moco['size']} x {moco['size']}, SGD; medians of {args.repeats} interleaved steps.",
        "",
        "| step | seconds |",
        "|---|---:|",
        f"| plain encoder step (forward, backward, SGD) | {moco['plain_s']:.3f} |",
        f"| MoCo step (+ key encoder forward, InfoNCE over a 4096 queue, EMA update, enqueue) | {moco['moco_s']:.3f} |",
        f"| **overhead** | **{100 * moco['overhead']:.0f} %** |",
        "",
        "The key encoder's forward pass (no gradient) is most of the overhead; the EMA update (`torch._foreach`) "
        "and the enqueue are a small fraction.",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"cache": cache, "loss": loss, "moco": moco, "load": [load0, load1]}, f, indent=2)
    print(f"wrote {args.out}")
    if not math.isfinite(cache["speedup"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

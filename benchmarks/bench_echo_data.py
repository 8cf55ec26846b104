"""
Throughput of the EchoNet/AdaCon video data pipeline: clips per second delivered by a DataLoader.

Each item yields two independent views (clips of 32 frames at period 2 with frame jitter), as contrastive training
uses them, through ``monai.data.Dataset`` and a DataLoader, on synthetic EchoNet-Dynamic videos (``--frames`` sets
their length range). Configurations (pipeline, loader, source):

- ``decode-float``: EchoNet-style reference, decoding every item and normalising, padding and cropping in float32 on
  the CPU; DataLoader with worker processes.
- ``decode``: the adacon_lvef_echo bundle's pipeline (``LoadVideod`` -> ``RandClipViewsd``, uint8) decoding the AVI
  for every item, with the loader the bundle uses without a cache (DataLoader, worker processes).
- ``cache``: the same pipeline reading a warm memory-mapped ``VideoCache``, with the loader the bundle uses with a
  cache (MONAI ``ThreadDataLoader``, one background thread, no worker processes).
- ablations of ``cache``: worker processes instead of the thread; every ``VideoCache.get`` mapping the file anew
  (``max_open=0``, as for a dataset with more videos than ``max_open``); and the previous release's pipeline
  (``RandMultiViewd(RandClipSampled -> RandFrameJitterd)``, views stacked, worker processes, maps not kept).

Each run times at least ``--batches`` batches and ``--min-seconds`` seconds after one warm-up batch.

Usage::

    python benchmarks/bench_echo_data.py --num-videos 64 --batches 20 --workers 2 --frames 118 232 \
        --out benchmarks/results/echo_data_pipeline.md
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import cv2
import monai
import numpy as np
import torch
from monai.data import DataLoader, Dataset, ThreadDataLoader, list_data_collate
from monai.transforms import BorderPadd, Compose, CopyItemsd, RandSpatialCropd

from monai_contrastive.data.echonet import load_echonet_filelist
from monai_contrastive.data.synthetic_echo import generate_echo_demo
from monai_contrastive.data.video import VideoCache
from monai_contrastive.data.video_stats import fit_video_normalization
from monai_contrastive.transforms import RandMultiViewd
from monai_contrastive.transforms.video import (
    LoadVideod,
    NormalizeVideod,
    RandClipSampled,
    RandClipViewsd,
    RandFrameJitterd,
)

VIEWS = ("image", "image_2")


@dataclass(frozen=True)
class Config:
    name: str
    pipeline: str  # "reference" | "bundle" | "previous"
    loader: str  # "processes" | "thread"
    cached: bool
    max_open: int | None = None  # VideoCache.max_open (None: the default)
    description: str = ""


CONFIGS = (
    Config("decode-float", "reference", "processes", False, description="EchoNet-style float32 reference"),
    Config("decode", "bundle", "processes", False, description="bundle pipeline, no cache (its loader: processes)"),
    Config("cache", "bundle", "thread", True, description="bundle pipeline, cache (its loader: one thread)"),
    Config("cache, processes", "bundle", "processes", True, description="ablation: worker processes"),
    Config("cache, maps not kept", "bundle", "thread", True, 0, description="ablation: max_open=0"),
    Config("cache, previous", "previous", "processes", True, 0, description="previous release's cached pipeline"),
)


def build_reference(cache_dir: str | None, mean: list[float], std: list[float], max_open: int | None) -> Compose:
    """EchoNet-style float32 pipeline (normalise the clip on the CPU, then pad + crop with MONAI transforms)."""
    return Compose(
        [
            LoadVideod("image", cache_dir=cache_dir),
            CopyItemsd("image", names="image_2"),
            *[RandClipSampled(k, length=32, period=2) for k in VIEWS],
            NormalizeVideod(VIEWS, mean, std),
            BorderPadd(VIEWS, spatial_border=(0, 12, 12)),
            *[RandSpatialCropd(k, roi_size=(-1, 112, 112), random_size=False) for k in VIEWS],
        ]
    )


def _loader(cache_dir: str | None, max_open: int | None) -> LoadVideod:
    t = LoadVideod("image", cache_dir=cache_dir, as_tensor=False)
    if t.loader.cache is not None and max_open is not None:
        t.loader.cache.max_open = max_open
    return t


def build_bundle(cache_dir: str | None, mean: list[float], std: list[float], max_open: int | None) -> Compose:
    """The adacon_lvef_echo bundle's training pipeline: uint8 clips, normalised later on the device."""
    fill = [int(round(m)) for m in mean]
    views = RandClipViewsd("image", num_views=2, length=32, period=2, pad=12, pad_value=fill, view_keys=VIEWS)
    return Compose([_loader(cache_dir, max_open), views])


def build_previous(cache_dir: str | None, mean: list[float], std: list[float], max_open: int | None) -> Compose:
    """The bundle's training pipeline before ``RandClipViewsd`` (views composed, then stacked)."""
    fill = [int(round(m)) for m in mean]
    view = Compose([RandClipSampled("image", length=32, period=2, pad_value=fill), RandFrameJitterd("image", 12, fill)])
    return Compose([_loader(cache_dir, max_open), RandMultiViewd("image", transform=view, num_views=2)])


BUILDERS = {"reference": build_reference, "bundle": build_bundle, "previous": build_previous}


def make(cfg: Config, cache_dir: str, mean: list[float], std: list[float]) -> Compose:
    return BUILDERS[cfg.pipeline](cache_dir if cfg.cached else None, mean, std, cfg.max_open)


def run_loader(
    items: list[dict],
    cfg: Config,
    transform: Compose,
    batches: int,
    min_seconds: float,
    batch_size: int,
    workers: int,
    seed: int,
) -> dict:
    ds = Dataset(items, transform=transform)
    sampler = torch.utils.data.RandomSampler(
        ds, replacement=True, num_samples=10**6, generator=torch.Generator().manual_seed(seed)
    )
    kwargs = dict(batch_size=batch_size, sampler=sampler, collate_fn=list_data_collate)
    if cfg.loader == "thread":
        loader = ThreadDataLoader(ds, num_workers=0, **kwargs)
    else:
        loader = DataLoader(ds, num_workers=workers, **kwargs)  # MONAI's DataLoader seeds every worker
    start = time.perf_counter()
    it = iter(loader)
    batch = next(it)
    warm = time.perf_counter()
    count = 0
    for batch in it:
        if "image_2" in batch:
            assert batch["image"].shape == batch["image_2"].shape == (batch_size, 3, 32, 112, 112)
        else:
            assert batch["image"].shape == (batch_size, len(VIEWS), 3, 32, 112, 112)
        count += 1
        if count >= batches and time.perf_counter() - warm >= min_seconds:
            break
    end = time.perf_counter()
    del batch
    if hasattr(it, "close"):
        it.close()
    del it, loader
    samples = count * batch_size
    return {
        "warmup_s": warm - start,
        "timed_s": end - warm,
        "batches": count,
        "samples_per_s": samples / (end - warm),
        "clips_per_s": len(VIEWS) * samples / (end - warm),
    }


def stage_breakdown(items: list[dict], transform: Compose, n: int, batch_size: int) -> dict[str, float]:
    """
    CPU milliseconds per item of each transform (the two views' instances summed) and of the collation, measured with
    ``time.process_time`` in this process with one torch thread, so that other load on the machine inflates it less
    than wall-clock time.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    warm = len(items)  # one pass over every video first: open maps, allocator and page cache as in a long run
    try:
        totals = np.zeros(len(transform.transforms) + 1)
        outputs = []
        for i in range(n + warm):
            d = items[i % len(items)]
            for k, t in enumerate(transform.transforms):
                t0 = time.process_time()
                d = t(d)
                if i >= warm:
                    totals[k] += time.process_time() - t0
            if i >= warm:
                outputs.append(d)
        for b in range(0, len(outputs) - batch_size + 1, batch_size):
            t0 = time.process_time()
            list_data_collate(outputs[b : b + batch_size])  # noqa: E203
            totals[-1] += time.process_time() - t0
        totals[-1] *= n / max(batch_size * (len(outputs) // batch_size), 1)
    finally:
        torch.set_num_threads(threads)
    names = [type(t).__name__ for t in transform.transforms] + ["list_data_collate"]
    per_name: dict[str, float] = {}  # the two views' instances of a transform are summed
    for name, tot in zip(names, totals):
        per_name[name] = per_name.get(name, 0.0) + 1000 * tot / n
    return per_name


def busy_cpu_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (all processes), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children (the DataLoader workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-videos", type=int, default=64, help="demo videos to generate and sample from")
    parser.add_argument("--batches", type=int, default=20, help="minimum timed batches per run (after 1 warm-up)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="minimum timed seconds per run")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the process-based loaders")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration; the median is reported")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "monai_contrastive_bench_echo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, nargs=2, default=(64, 128), help="frame-count range of the videos")
    parser.add_argument("--out", default=None, help="write the markdown report here (else print it)")
    args = parser.parse_args()

    frames_range = tuple(args.frames)
    root = generate_echo_demo(
        os.path.join(args.data_dir, f"EchoNet_{frames_range[0]}_{frames_range[1]}"),
        num_videos=args.num_videos,
        seed=args.seed,
        frames=frames_range,
    )
    items = load_echonet_filelist(root, "ALL")
    cache_dir = os.path.join(args.data_dir, "cache")
    shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.perf_counter()
    VideoCache(cache_dir).prepare(items, num_workers=0, progress=False)
    prepare_s = time.perf_counter() - t0
    cache_mb = sum(os.path.getsize(os.path.join(cache_dir, f)) for f in os.listdir(cache_dir)) / 2**20
    avi_mb = sum(os.path.getsize(it["image"]) for it in items) / 2**20
    mean, std = fit_video_normalization(
        [it for it in items if it["split"] == "TRAIN"], num_videos=128, seed=0, cache=VideoCache(cache_dir)
    )
    frames = [it["num_frames"] for it in items]
    load_before = os.getloadavg()
    busy0, own0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()

    results: dict[str, list[dict]] = {c.name: [] for c in CONFIGS}
    for r in range(args.repeats):
        for cfg in CONFIGS:
            res = run_loader(
                items,
                cfg,
                make(cfg, cache_dir, mean, std),
                args.batches,
                args.min_seconds,
                args.batch_size,
                args.workers,
                seed=args.seed + r,
            )
            results[cfg.name].append(res)
            print(f"run {r} {cfg.name}: {res['clips_per_s']:.1f} clips/s (warm-up {res['warmup_s']:.2f} s)", flush=True)
    wall = time.perf_counter() - wall0
    others = (busy_cpu_seconds() - busy0) - (own_cpu_seconds() - own0)
    staged = [c for c in CONFIGS if c.name in ("decode-float", "decode", "cache", "cache, previous")]
    breakdown = {c.name: stage_breakdown(items, make(c, cache_dir, mean, std), 40, args.batch_size) for c in staged}

    def med(name: str, field: str) -> float:
        return statistics.median(r[field] for r in results[name])

    cache_clips = med("cache", "clips_per_s")
    speedup = cache_clips / med("decode", "clips_per_s")
    speedup_ref = cache_clips / med("decode-float", "clips_per_s")
    nproc = len(os.sched_getaffinity(0))
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    lines = [
        f"# EchoNet video data pipeline throughput (AdaCon LVEF), videos of {frames_range[0]}-{frames_range[1]} frames",
        "",
        "Clips per second delivered by a DataLoader over `monai.data.Dataset`; two independent views (clips of 32",
        "frames at period 2, each with its own frame jitter of 12 px) per item, one clip = one view, uint8",
        "(3, 32, 112, 112) per clip unless stated.",
        "",
        "- `decode-float` (reference): the EchoNet-style pipeline, decoding every item and working in float32 on the",
        "  CPU: `LoadVideod -> CopyItemsd -> RandClipSampled x2 -> NormalizeVideod -> BorderPadd(0, 12, 12) ->",
        f"  RandSpatialCropd(-1, 112, 112) x2`; `DataLoader(num_workers={args.workers})`.",
        "- `decode`: the `adacon_lvef_echo` bundle's training pipeline, `LoadVideod(as_tensor=False) ->",
        "  RandClipViewsd(num_views=2, view_keys=[image, image_2])`, OpenCV decoding the AVI for every item, with the",
        f"  loader the bundle uses without a cache: `DataLoader(num_workers={args.workers})`.",
        "- `cache`: the same pipeline reading a warm `VideoCache` (memory-mapped uint8), with the loader the bundle",
        "  uses with a cache: MONAI `ThreadDataLoader(num_workers=0)` (one background thread, no worker processes).",
        f"- ablations of `cache`: `cache, processes` = `DataLoader(num_workers={args.workers})`;",
        "  `cache, maps not kept` = `VideoCache(max_open=0)`, every item maps its file anew (a dataset with more",
        "  videos than `max_open`);",
        "  `cache, previous` = the previous release's bundle pipeline, `RandMultiViewd(RandClipSampled ->",
        "  RandFrameJitterd, 2 views)` stacked to (2, 3, 32, 112, 112), "
        f"`DataLoader(num_workers={args.workers})`, maps not kept",
        "  (883 clips/s in the previous report, measured on another machine).",
        "",
        f"Each run: 1 warm-up batch (worker start-up), then at least {args.batches} timed batches of {args.batch_size} "
        f"items and {args.min_seconds:g} s; the table gives the median of {args.repeats} runs per configuration "
        "(configurations interleaved). Every loader uses MONAI's `list_data_collate`; samples are drawn with "
        "replacement.",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: `nproc` = {nproc}, CPU model `{cpu_model()}` (from /proc/cpuinfo), "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, no GPU used",
        f"- other load: 1-min load average {load_before[0]:.2f} before the runs; during the {wall:.0f} s of timed "
        f"runs other processes used {max(others, 0.0):.0f} CPU-seconds, i.e. {max(others, 0.0) / wall:.2f} of the "
        f"{nproc} cores on average (busy time from /proc/stat minus this benchmark's own)",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}, "
        f"opencv-python-headless {cv2.__version__}, numpy {np.__version__}",
        f"- command: `{command}`",
        f"- data: {len(items)} synthetic videos (`generate_echo_demo`, seed {args.seed}, frames={frames_range}), "
        f"112x112 MJPG AVI, {min(frames)}-{max(frames)} frames (mean {np.mean(frames):.0f}); AVIs {avi_mb:.1f} MiB, "
        f"cache {cache_mb:.1f} MiB; all files in the OS page cache in every configuration",
        "",
        "| configuration | clips/s | items/s | timed batches | timed s | warm-up batch (s) | `cache` speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cfg in CONFIGS:
        lines.append(
            f"| {cfg.name} | {med(cfg.name, 'clips_per_s'):.1f} | {med(cfg.name, 'samples_per_s'):.1f} | "
            f"{med(cfg.name, 'batches'):.0f} | {med(cfg.name, 'timed_s'):.2f} | {med(cfg.name, 'warmup_s'):.2f} | "
            f"{cache_clips / med(cfg.name, 'clips_per_s'):.2f}x |"
        )
    lines += [
        "",
        f"**Cache vs decoding each time (the bundle's pipeline and loader either way): {speedup:.2f}x; vs the "
        f"EchoNet-style float pipeline: {speedup_ref:.2f}x** (issue target >= 10x: "
        f"{'met' if speedup >= 10 else 'NOT met'} for the bundle's pipeline, "
        f"{'met' if speedup_ref >= 10 else 'NOT met'} against the reference); cache throughput {cache_clips:.0f} "
        f"clips/s (target >= 200: {'met' if cache_clips >= 200 else 'NOT met'}).",
        "",
        "All runs (clips/s): "
        + "; ".join(f"{m}: " + ", ".join(f"{r['clips_per_s']:.0f}" for r in results[m]) for m in results),
        "",
        f"Filling the cache once (`VideoCache.prepare`, 1 thread): {prepare_s:.1f} s for {len(items)} videos "
        f"({1000 * prepare_s / len(items):.0f} ms/video).",
        "",
        "CPU cost per item by stage (ms, `time.process_time`, one process, 1 torch thread, after one pass over every",
        "video; the two views' instances of a transform summed; the collation is the batch's cost divided by its",
        "items, in this process's memory):",
        "",
        "| stage | " + " | ".join(c.name for c in staged) + " |",
        "|---|" + "---:|" * len(staged),
    ]
    names = list(dict.fromkeys(n for c in staged for n in breakdown[c.name]))
    for name in names:
        cells = [f"{breakdown[c.name][name]:.2f}" if name in breakdown[c.name] else "" for c in staged]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| total | " + " | ".join(f"{sum(breakdown[c.name].values()):.2f}" for c in staged) + " |")
    bd = breakdown
    lines += [
        "",
        f"Reading: decoding costs {bd['decode']['LoadVideod']:.1f} ms per item (OpenCV, the whole video), the cache "
        f"{bd['cache']['LoadVideod']:.2f} ms. In one process with one thread, a cached item then costs "
        f"{sum(bd['cache'].values()):.2f} ms with the bundle's `RandClipViewsd` (both views written once, straight "
        f"from the memory map: {bd['cache']['RandClipViewsd']:.2f} ms) against "
        f"{sum(bd['cache, previous'].values()):.2f} ms with the previous `RandMultiViewd` (gather, fill + crop, stack: "
        f"{bd['cache, previous']['RandMultiViewd']:.2f} ms). Keeping the memory maps open is worth "
        f"{cache_clips / med('cache, maps not kept', 'clips_per_s'):.2f}x "
        "(`cache` vs `cache, maps not kept`: a fresh map faults in every page a clip reads); one loader thread instead "
        f"of worker processes {cache_clips / med('cache, processes', 'clips_per_s'):.2f}x (`cache` vs `cache, "
        "processes`: a worker hands each 48 MB batch over in newly allocated shared memory, and faulting that in "
        "costs more than building the batch; in the thread, torch copies the views on its intra-op threads, so "
        "both cores work). Together "
        f"{cache_clips / med('cache, previous', 'clips_per_s'):.2f}x over the previous cached pipeline on this "
        "machine.",
    ]
    report = "\n".join(lines) + "\n"
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(report)
        print(f"written {args.out}")
    print(report)


if __name__ == "__main__":
    main()

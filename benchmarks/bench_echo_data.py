"""
Throughput of the EchoNet/AdaCon video data pipeline: clips per second delivered by a DataLoader.

Each item yields two independent views (clips of 32 frames at period 2 with frame jitter), as contrastive training
uses them, through ``monai.data.Dataset`` and ``torch.utils.data.DataLoader`` (MONAI's ``list_data_collate`` and
``worker_init_fn``), on synthetic EchoNet-Dynamic videos (``--frames`` sets their length range).

Modes: ``cache`` (the adacon_lvef_echo bundle's uint8 pipeline reading a warm memory-mapped ``VideoCache``),
``decode`` (the same pipeline decoding the AVI for every item) and ``decode-float`` (EchoNet-style reference that
decodes every item and normalises, pads and crops in float32 on the CPU). Each run times ``--batches`` batches after
one warm-up batch.

Usage::

    python benchmarks/bench_echo_data.py --num-videos 64 --batches 20 --workers 2 \
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
from datetime import datetime, timezone

import cv2
import monai
import numpy as np
import torch
from monai.data import Dataset, list_data_collate
from monai.data.utils import worker_init_fn
from monai.transforms import BorderPadd, Compose, CopyItemsd, RandSpatialCropd

from monai_contrastive.data.echonet import VideoCache, fit_video_normalization, load_echonet_filelist
from monai_contrastive.data.synthetic_echo import generate_echo_demo
from monai_contrastive.transforms import RandMultiViewd
from monai_contrastive.transforms.video import LoadVideod, NormalizeVideod, RandClipSampled, RandFrameJitterd

VIEWS = ("image", "image_2")


def build_reference(cache_dir: str | None, mean: list[float], std: list[float]) -> Compose:
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


def build_bundle(cache_dir: str | None, mean: list[float], std: list[float]) -> Compose:
    """The adacon_lvef_echo bundle's training pipeline: uint8 clips, normalised later on the device."""
    fill = [int(round(m)) for m in mean]
    view = Compose([RandClipSampled("image", length=32, period=2, pad_value=fill), RandFrameJitterd("image", 12, fill)])
    return Compose(
        [
            LoadVideod("image", cache_dir=cache_dir, as_tensor=False),
            RandMultiViewd("image", transform=view, num_views=2),
        ]
    )


MODES = ("decode-float", "decode", "cache")


def make(mode: str, cache_dir: str, mean: list[float], std: list[float]) -> Compose:
    if mode == "decode-float":
        return build_reference(None, mean, std)
    return build_bundle(cache_dir if mode == "cache" else None, mean, std)


def run_loader(items: list[dict], transform: Compose, batches: int, batch_size: int, workers: int, seed: int) -> dict:
    ds = Dataset(items, transform=transform)
    sampler = torch.utils.data.RandomSampler(
        ds, replacement=True, num_samples=(batches + 1) * batch_size, generator=torch.Generator().manual_seed(seed)
    )
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=list_data_collate,
        worker_init_fn=worker_init_fn,
    )
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
    end = time.perf_counter()
    del it, loader
    samples = count * batch_size
    return {
        "warmup_s": warm - start,
        "timed_s": end - warm,
        "samples_per_s": samples / (end - warm),
        "clips_per_s": len(VIEWS) * samples / (end - warm),
    }


def stage_breakdown(items: list[dict], transform: Compose, n: int, batch_size: int) -> dict[str, float]:
    """
    CPU milliseconds per item of each transform (both views' instances summed) and of the collation, measured with
    ``time.process_time`` in this process with one torch thread (as in a DataLoader worker), so that other load on
    the machine inflates it less than wall-clock time.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        totals = np.zeros(len(transform.transforms) + 1)
        outputs = []
        for i in range(n + 2):
            d = items[i % len(items)]
            for k, t in enumerate(transform.transforms):
                t0 = time.process_time()
                d = t(d)
                if i >= 2:  # skip two warm-up items
                    totals[k] += time.process_time() - t0
            if i >= 2:
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
    parser.add_argument("--batches", type=int, default=20, help="timed batches per run (after 1 warm-up batch)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode; the median is reported")
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

    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for r in range(args.repeats):
        for mode in MODES:
            transform = make(mode, cache_dir, mean, std)
            res = run_loader(items, transform, args.batches, args.batch_size, args.workers, seed=args.seed + r)
            results[mode].append(res)
            print(f"run {r} {mode}: {res['clips_per_s']:.1f} clips/s (warm-up {res['warmup_s']:.2f} s)", flush=True)
    wall = time.perf_counter() - wall0
    others = (busy_cpu_seconds() - busy0) - (own_cpu_seconds() - own0)
    for mode in MODES:  # warm the allocator / page cache first so that the first mode measured is not penalised
        stage_breakdown(items, make(mode, cache_dir, mean, std), args.batch_size, args.batch_size)
    breakdown = {mode: stage_breakdown(items, make(mode, cache_dir, mean, std), 40, args.batch_size) for mode in MODES}

    def med(mode: str, field: str) -> float:
        return statistics.median(r[field] for r in results[mode])

    speedup = med("cache", "clips_per_s") / med("decode", "clips_per_s")
    speedup_ref = med("cache", "clips_per_s") / med("decode-float", "clips_per_s")
    cache_clips = med("cache", "clips_per_s")
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    lines = [
        f"# EchoNet video data pipeline throughput (AdaCon LVEF), videos of {frames_range[0]}-{frames_range[1]} frames",
        "",
        "Clips per second delivered by `torch.utils.data.DataLoader` over `monai.data.Dataset`; two independent",
        "views (clips of 32 frames at period 2 with frame jitter) per item, one clip = one view.",
        "",
        "- `cache`: the `adacon_lvef_echo` bundle's training pipeline, `LoadVideod(cache_dir=..., as_tensor=False)`",
        "  (memory-mapped uint8 from a warm `VideoCache`) -> `RandMultiViewd(RandClipSampled(32, 2) ->",
        "  RandFrameJitterd(12), 2 views)`; uint8 (2, 3, 32, 112, 112) per item, normalised on the device by the",
        "  network's `InputNormalization`;",
        "- `decode`: the same pipeline with OpenCV decoding the AVI for every item (`cache_dir=None`);",
        "- `decode-float` (reference): the EchoNet-style pipeline, decoding every item and working in float32 on the",
        "  CPU: `LoadVideod -> CopyItemsd -> RandClipSampled x2 -> NormalizeVideod -> BorderPadd(0, 12, 12) ->",
        "  RandSpatialCropd(-1, 112, 112) x2`.",
        "",
        f"Each run: 1 warm-up batch (worker start-up), then {args.batches} timed batches of {args.batch_size} items; "
        f"the table gives the median of {args.repeats} runs per mode (modes interleaved).",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: `nproc` = {len(os.sched_getaffinity(0))}, CPU model `{cpu_model()}` (from /proc/cpuinfo), "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, no GPU used",
        f"- other load: 1-min load average {load_before[0]:.2f} before the runs; during the {wall:.0f} s of timed "
        f"runs other processes used {max(others, 0.0):.0f} CPU-seconds, i.e. {max(others, 0.0) / wall:.2f} of the "
        f"{len(os.sched_getaffinity(0))} cores on average (busy time from /proc/stat minus this benchmark's own)",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}, "
        f"opencv-python-headless {cv2.__version__}, numpy {np.__version__}",
        f"- command: `{command}`",
        f"- data: {len(items)} synthetic videos (`generate_echo_demo`, seed {args.seed}, frames={frames_range}), "
        f"112x112 MJPG AVI, {min(frames)}-{max(frames)} frames (mean {np.mean(frames):.0f}); AVIs {avi_mb:.1f} MiB, "
        f"cache {cache_mb:.1f} MiB; all files in the OS page cache in every mode",
        f"- DataLoader: num_workers={args.workers}, batch_size={args.batch_size}, sampler with replacement, "
        "collate_fn=list_data_collate, worker_init_fn=monai.data.utils.worker_init_fn",
        "",
        "| mode | clips/s | items/s | timed batches (s) | warm-up batch (s) | cache speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        lines.append(
            f"| {mode} | {med(mode, 'clips_per_s'):.1f} | {med(mode, 'samples_per_s'):.1f} | "
            f"{med(mode, 'timed_s'):.2f} | {med(mode, 'warmup_s'):.2f} | "
            f"{cache_clips / med(mode, 'clips_per_s'):.2f}x |"
        )
    lines += [
        "",
        f"**Cache vs decoding each time (same pipeline): {speedup:.2f}x; vs the EchoNet-style float pipeline: "
        f"{speedup_ref:.2f}x** (issue target >= 10x: {'met' if speedup >= 10 else 'NOT met'} for the same pipeline, "
        f"{'met' if speedup_ref >= 10 else 'NOT met'} against the reference); cache throughput {cache_clips:.0f} "
        f"clips/s (target >= 200: {'met' if cache_clips >= 200 else 'NOT met'}).",
        "",
        "All runs (clips/s): "
        + "; ".join(f"{m}: " + ", ".join(f"{r['clips_per_s']:.0f}" for r in results[m]) for m in results),
        "",
        f"Filling the cache once (`VideoCache.prepare`, 1 thread): {prepare_s:.1f} s for {len(items)} videos "
        f"({1000 * prepare_s / len(items):.0f} ms/video).",
        "",
        "CPU cost per item by stage (ms, `time.process_time`, one process, 1 torch thread as in a worker; the two",
        "views' instances of a transform summed; the collation is the batch's cost divided by its items):",
        "",
        "| stage | " + " | ".join(MODES) + " |",
        "|---|" + "---:|" * len(MODES),
    ]
    names = list(dict.fromkeys(n for m in MODES for n in breakdown[m]))
    for name in names:
        cells = [f"{breakdown[m][name]:.2f}" if name in breakdown[m] else "" for m in MODES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| total | " + " | ".join(f"{sum(breakdown[m].values()):.2f}" for m in MODES) + " |")
    dec_total, cache_total = sum(breakdown["decode"].values()), sum(breakdown["cache"].values())
    dec_load, cache_load = breakdown["decode"]["LoadVideod"], breakdown["cache"]["LoadVideod"]
    lines += [
        "",
        f"Reading: decoding a video costs {dec_load:.1f} ms per item and the cache brings `LoadVideod` down to "
        f"{cache_load:.2f} ms ({dec_load / max(cache_load, 1e-9):.0f}x). What is left of the cached pipeline, "
        f"{cache_total - cache_load:.1f} ms per item in one process, is moving bytes: two 1.2 MB uint8 clips copied "
        "out of the memory map, jittered and stacked, then collated into a 48 MB batch. By CPU cost alone the cache "
        f"can therefore make this pipeline at most {dec_total / cache_total:.1f}x faster than decoding every item; "
        "the DataLoader adds, in every mode alike, the batch's shared-memory allocation (page faults on 48 MB per "
        "batch) and its hand-over to the main process, which is why the measured ratios are lower. The float32 "
        "reference pipeline moves four times the bytes on top of decoding.",
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

"""
Generation time of the synthetic multi-organ CT demo data (``monai_contrastive.data.synthetic_ct``).

Times ``generate_ct_demo`` on the default demo set (30 labelled + 30 unlabelled volumes at matrix 128) into a fresh
temporary folder, in this process (``num_workers=0``) and optionally with worker processes, then a cached second
call; reports the wall time, the time per volume and a summary of the generated data, and writes a Markdown file.

Usage::

    python benchmarks/bench_synthetic_ct.py --repeats 2 --workers 0 2 \
        --out benchmarks/results/synthetic_ct_generation.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone

import monai
import nibabel as nib
import numpy as np
import scipy

from monai_contrastive.data.synthetic_ct import generate_ct_demo


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        return f"{kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        return "RAM unknown"


def _busy_seconds() -> float | None:
    """CPU-seconds spent by all processes (user + nice + system + irq + softirq + steal) from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    busy = fields[0] + fields[1] + fields[2] + sum(fields[5:8])
    return busy / ticks


def _own_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _summary(datalist_path: str) -> dict:
    root = os.path.dirname(datalist_path)
    with open(datalist_path) as f:
        datalist = json.load(f)
    items = [it for key in ("training", "validation", "testing", "unlabelled") for it in datalist[key]]
    slices, codes, storages = [], Counter(), Counter()
    for item in items:
        image = nib.load(os.path.join(root, item["image"]))
        slices.append(image.shape[2])
        codes["".join(nib.aff2axcodes(image.affine))] += 1
        storages["HU+1024, scl 1/-1024" if image.dataobj.inter == -1024.0 else "HU, scl 1/0"] += 1
    size = sum(os.path.getsize(os.path.join(dirpath, name)) for dirpath, _, names in os.walk(root) for name in names)
    spacing = np.array([it["spacing"] for it in items])
    return {
        "counts": {k: len(datalist[k]) for k in ("training", "validation", "testing", "unlabelled")},
        "volumes": len(items),
        "slices": (min(slices), int(np.median(slices)), max(slices)),
        "voxels": sum(128 * 128 * s for s in slices),
        "in_plane": (float(spacing[:, 0].min()), float(spacing[:, 0].max())),
        "slice_spacing": (float(spacing[:, 2].min()), float(spacing[:, 2].max())),
        "orientations": dict(sorted(codes.items())),
        "storage": dict(sorted(storages.items())),
        "phases": dict(sorted(Counter(it["phase"] for it in items).items())),
        "size_mib": size / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="timed generations per worker setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="num_workers values to time")
    parser.add_argument("--out", default="benchmarks/results/synthetic_ct_generation.md")
    args = parser.parse_args()
    command = "python " + " ".join(sys.argv)

    load_before = os.getloadavg()[0]
    rows = []
    summary = None
    cached_s = None
    busy0, own0, wall0 = _busy_seconds(), _own_cpu_seconds(), time.perf_counter()
    for workers in args.workers:
        times = []
        for _ in range(args.repeats):
            folder = tempfile.mkdtemp(prefix="ct_demo_bench_")
            try:
                start = time.perf_counter()
                path = generate_ct_demo(folder, num_workers=workers)
                times.append(time.perf_counter() - start)
                if summary is None:
                    start = time.perf_counter()
                    generate_ct_demo(folder, num_workers=workers)
                    cached_s = time.perf_counter() - start
                    summary = _summary(path)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        rows.append((workers, times))
        print(f"num_workers={workers}: " + ", ".join(f"{t:.1f} s" for t in times), flush=True)
    busy1, own1, wall1 = _busy_seconds(), _own_cpu_seconds(), time.perf_counter()
    other = None
    if busy0 is not None and busy1 is not None:
        other = max(busy1 - busy0 - (own1 - own0), 0.0)

    assert summary is not None
    n = summary["volumes"]
    lines = [
        "# Synthetic multi-organ CT demo data: generation time",
        "",
        "`generate_ct_demo(folder)` with the default parameters (30 labelled + 30 unlabelled volumes, matrix 128;"
        " 30 label maps), into a fresh temporary folder per run; `num_workers=0` generates in the calling process.",
        "Times include rendering, NIfTI writing (gzip level 1) and the datalist; the 'cached' row is a second call"
        " on a complete folder.",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: `nproc` = {os.cpu_count()}, CPU model `{_cpu_model()}` (from /proc/cpuinfo), {_memory_gib()},"
        " no GPU used",
        f"- other load: 1-min load average {load_before:.2f} before the runs"
        + (
            f"; during the {wall1 - wall0:.0f} s of runs other processes used {other:.0f} CPU-seconds, i.e."
            f" {other / (wall1 - wall0):.2f} of the {os.cpu_count()} cores on average (busy time from /proc/stat"
            " minus this benchmark's own)"
            if other is not None
            else ""
        ),
        f"- versions: Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__},"
        f" nibabel {nib.__version__}, monai {monai.__version__}",
        f"- command: `{command}`",
        f"- data: {n} volumes ({summary['counts']}), {summary['slices'][0]}-{summary['slices'][2]} slices (median"
        f" {summary['slices'][1]}), {summary['voxels'] / 1e6:.1f} M voxels in all, {summary['size_mib']:.1f} MiB on"
        f" disk; in-plane spacing {summary['in_plane'][0]:.3f}-{summary['in_plane'][1]:.3f} mm, slices"
        f" {summary['slice_spacing'][0]:.2f}-{summary['slice_spacing'][1]:.2f} mm; orientations"
        f" {summary['orientations']}; storage {summary['storage']}; phases {summary['phases']}",
        "",
        "| num_workers | runs | wall time, median (s) | min (s) | per volume, median (ms) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for workers, times in rows:
        med = statistics.median(times)
        lines.append(f"| {workers} | {len(times)} | {med:.1f} | {min(times):.1f} | {1000 * med / n:.0f} |")
    lines.append(f"| cached | 1 | {cached_s:.4f} | {cached_s:.4f} | - |")
    lines.append("")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

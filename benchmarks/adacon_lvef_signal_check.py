"""Does the EF signal of the synthetic echo videos survive the demo's clip sampling and resolution? (issue 11)

Two checks without any network, on the demo generator's videos (seed 0), fitting a least-squares line on the first
2/3 of the videos and scoring R² on the other 1/3:

1. "true LV areas": the cavity area of each sampled frame computed from the generator's parameters (no image), for
   the clip sampling of the demo (random start, ``clip_length`` frames every ``clip_period``) and of the paper
   (32 frames every 2); feature: min / max area over the clip.
2. "rendered frames": the fraction of dark pixels (< threshold) of each sampled frame of the rendered video after the
   demo's subsampling (every ``frame_stride``-th pixel), min / max over the clip.

    python benchmarks/adacon_lvef_signal_check.py --out benchmarks/results/adacon_lvef_signal_check.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _r2_line(x: np.ndarray, y: np.ndarray, n_fit: int) -> float:
    a = np.c_[x, np.ones(len(x))]
    w = np.linalg.lstsq(a[:n_fit], y[:n_fit], rcond=None)[0]
    pred, yt = a[n_fit:] @ w, y[n_fit:]
    return float(1.0 - ((pred - yt) ** 2).sum() / ((yt - yt.mean()) ** 2).sum())


def main() -> None:
    from monai_contrastive.data.synthetic_echo import _cycle, draw_echo_params, render_echo_video

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=300)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "adacon_lvef_signal_check.md"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    params = [draw_echo_params(i) for i in range(args.videos)]
    ef = np.array([p["ef"] for p in params])
    n_fit = 2 * args.videos // 3

    def clip_frames(p: dict, length: int, period: int) -> np.ndarray:
        span = (length - 1) * period + 1
        start = int(rng.integers(0, max(1, p["num_frames"] - span + 1)))
        return start + np.arange(length) * period

    lines = [
        "# Synthetic LVEF echo: does the EF signal survive the demo's clip sampling and resolution?",
        "",
        f"- date: {datetime.date.today()}; python {platform.python_version()}; "
        f"command: `python benchmarks/adacon_lvef_signal_check.py {' '.join(sys.argv[1:])}`",
        f"- {args.videos} demo videos (generator seed 0); a least-squares line fitted on {n_fit}, R² on the other "
        f"{args.videos - n_fit}. No network involved.",
        "",
        "## 1. True LV cavity areas (from the generator's parameters) at the sampled frames",
        "",
        "| clip sampling | frames spanned | R² of EF from min/max area |",
        "|---|---|---|",
    ]
    for length, period, note in [(8, 8, "demo"), (32, 2, "paper"), (8, 4, ""), (16, 4, "")]:
        ratio = []
        for p in params:
            t = clip_frames(p, length, period) / p["fps"]
            s = _cycle(p["phase"] + t * p["heart_rate"] / 60.0)
            area = np.pi * (p["a_es"] + (p["a_ed"] - p["a_es"]) * s) * (p["b_es"] + (p["b_ed"] - p["b_es"]) * s)
            ratio.append(area.min() / area.max())
        r2 = _r2_line(np.array(ratio)[:, None], ef, n_fit)
        lines.append(
            f"| {length} frames every {period}{f' ({note})' if note else ''} | {(length - 1) * period + 1} | "
            f"{r2:.3f} |"
        )
    cycles = np.array([60.0 / p["heart_rate"] * p["fps"] for p in params])
    lines += [
        "",
        f"A cardiac cycle lasts {cycles.min():.0f}–{cycles.max():.0f} frames (median {np.median(cycles):.0f}): a clip "
        "must span most of a cycle to hold both end-diastole and end-systole; 8 frames every 8 (57 frames) and 32 "
        "every 2 (63) nearly always do, 8 every 4 (29) often does not. The demo's sparse sampling loses almost "
        "nothing: EF is a near-exact function of the sampled areas.",
        "",
        "## 2. Rendered frames: dark-pixel fraction at the sampled frames",
        "",
        "| clip sampling | pixels (every k-th) | threshold | R² of EF from min/max dark fraction |",
        "|---|---|---|---|",
    ]
    videos = [render_echo_video(p).astype(np.float32) / 255.0 for p in params]
    for length, period in [(8, 8), (32, 2)]:
        for stride in (4, 2, 1):
            for thr in (0.08, 0.12):
                ratio = []
                for p, v in zip(params, videos):
                    c = v[clip_frames(p, length, period)][:, ::stride, ::stride]
                    d = (c < thr).reshape(length, -1).mean(1) + 1e-4
                    ratio.append(d.min() / d.max())
                r2 = _r2_line(np.array(ratio)[:, None], ef, n_fit)
                size = 112 // stride
                lines.append(f"| {length} every {period} | {size}×{size} (k = {stride}) | {thr} | {r2:.3f} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

# Copyright (c) MONAI Consortium and monai-contrastive contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
Synthetic apical-4-chamber-like echocardiogram videos in the EchoNet-Dynamic folder layout, so that the LVEF
bundle runs (and its real reading code is exercised) with no data.

Each video shows an ultrasound sector with speckle, a dark left-ventricle cavity (an ellipse) inside a bright
myocardium, a right ventricle and a left atrium. The cavity follows a cardiac cycle; the ejection fraction written
to ``FileList.csv`` comes from the end-diastolic and end-systolic volumes of that cavity by the single-plane
area-length method, ``V = 8 A^2 / (3 pi L)`` (A: cavity area, L: long-axis length), the method EchoNet-Dynamic's
tracings are reduced with.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence

import numpy as np
from monai.utils import optional_import

from monai_contrastive.io import atomic_path, atomic_write, atomic_write_json

cv2, _ = optional_import("cv2")

__all__ = ["generate_echo_demo", "draw_echo_params", "area_length_volume", "render_echo_video"]

PARAMS_FILE = "echo_demo_params.json"
_VERSION = 1
_SIZE = 112
_PIXEL_MM = 1.4  # chosen so that end-diastolic volumes come out in EchoNet's range (~50-150 mL)
_SYSTOLE = 0.35  # fraction of the cardiac cycle spent in systole
_CODEC = "MJPG"  # in every opencv-python(-headless) wheel; FFmpeg decodes it fast


def area_length_volume(area_mm2: float | np.ndarray, length_mm: float | np.ndarray) -> float | np.ndarray:
    """Single-plane area-length LV volume in mL: ``V = 8 A^2 / (3 pi L)`` with A in mm^2 and L in mm."""
    return 8.0 * np.asarray(area_mm2) ** 2 / (3.0 * math.pi * np.asarray(length_mm)) / 1000.0


def _draw_ef(rng: np.random.Generator) -> float:
    # EchoNet-Dynamic EF: mean 55.7 %, sd 12.5 %, skewed to the left (reduced-EF patients). A two-component mixture
    # gives mean ~55.8, sd ~11.5 and ~12 % of videos below 40 %.
    if rng.random() < 0.15:
        ef = rng.normal(38.0, 12.0)
    else:
        ef = rng.normal(59.0, 8.0)
    return float(np.clip(ef, 12.0, 82.0))


def draw_echo_params(index: int, seed: int = 0, frames: tuple[int, int] = (64, 128)) -> dict:
    """
    Parameters of demo video ``index``, drawn from ``numpy.random.default_rng([seed, index])`` so that a video does
    not depend on how many videos are generated.

    Returns:
        a dict with the video geometry (pixels), timing and the area-length volumes ``edv``/``esv`` (mL) and
        ``ef`` (%), ``ef = 100 (edv - esv) / edv``.
    """
    rng = np.random.default_rng([seed, index])
    p: dict = {"index": index}
    p["filename"] = f"0X{int(rng.integers(0, 2**62)):016X}"
    p["num_frames"] = int(rng.integers(frames[0], frames[1] + 1))
    p["fps"] = int(np.clip(round(rng.normal(50.0, 7.0)), 30, 80))
    p["heart_rate"] = float(rng.uniform(50.0, 110.0))  # bpm
    p["phase"] = float(rng.uniform(0.0, 1.0))  # cycle phase of frame 0; 0 = end-diastole
    target_ef = _draw_ef(rng)
    a_ed = float(rng.uniform(26.0, 35.0))  # semi-major axis (half the long axis), pixels
    b_ed = a_ed * float(rng.uniform(0.45, 0.6))  # semi-minor axis
    # V ~ a b^2 for an ellipse revolved about its long axis; the long axis shortens less than the short axis
    ratio = 1.0 - target_ef / 100.0
    p.update(a_ed=a_ed, b_ed=b_ed, a_es=a_ed * ratio**0.25, b_es=b_ed * ratio**0.375)
    p["theta"] = float(np.clip(rng.normal(0.15, 0.08), -0.05, 0.35))  # long-axis tilt from vertical, radians
    p["apex_x"] = float(58.0 + rng.uniform(-4.0, 4.0))
    p["apex_y"] = float(rng.uniform(9.0, 15.0))
    p["wall"] = float(rng.uniform(5.0, 7.5))  # end-diastolic wall thickness, pixels
    p["gain"] = float(rng.uniform(0.85, 1.15))
    p["sector_half_angle"] = float(rng.uniform(0.62, 0.72))
    p["noise_seed"] = int(rng.integers(0, 2**31))

    def _volume(a: float, b: float) -> float:
        return float(area_length_volume(math.pi * a * b * _PIXEL_MM**2, 2.0 * a * _PIXEL_MM))

    p["edv"] = _volume(p["a_ed"], p["b_ed"])
    p["esv"] = _volume(p["a_es"], p["b_es"])
    p["ef"] = 100.0 * (p["edv"] - p["esv"]) / p["edv"]
    return p


def _cycle(phase: np.ndarray) -> np.ndarray:
    """Relative cavity size over the cycle: 1 at end-diastole (phase 0), 0 at end-systole (phase ``_SYSTOLE``)."""
    phase = np.mod(phase, 1.0)
    sys = 0.5 * (1.0 + np.cos(np.pi * phase / _SYSTOLE))
    dia = 0.5 * (1.0 - np.cos(np.pi * (phase - _SYSTOLE) / (1.0 - _SYSTOLE)))
    return np.where(phase < _SYSTOLE, sys, dia)


def _soft_ellipse(p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Anti-aliased ellipse mask (1 inside) of semi-axes (a, b) in rotated coordinates (p, q); about 1 px edge."""
    r = np.sqrt((p / a) ** 2 + (q / b) ** 2)
    return np.clip((1.0 - r) * b + 0.5, 0.0, 1.0)


def render_echo_video(params: dict) -> np.ndarray:
    """
    Render one demo video from :py:func:`draw_echo_params` output.

    Returns:
        uint8 array (T, H, W), H = W = 112, grey levels (written as a colour AVI).
    """
    rng = np.random.default_rng(params["noise_seed"])
    n, size = params["num_frames"], _SIZE
    t = np.arange(n, dtype=np.float32) / params["fps"]
    s = _cycle(params["phase"] + t * params["heart_rate"] / 60.0).astype(np.float32)[:, None, None]  # (T, 1, 1)
    a = params["a_es"] + (params["a_ed"] - params["a_es"]) * s
    b = params["b_es"] + (params["b_ed"] - params["b_es"]) * s
    wall = params["wall"] * (1.0 + 0.4 * (1.0 - s))  # the myocardium thickens in systole

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ux, uy = math.sin(params["theta"]), math.cos(params["theta"])  # long axis, apex -> base
    # the apex stays put, the base moves towards it in systole
    cx = params["apex_x"] + (params["wall"] + a) * ux
    cy = params["apex_y"] + (params["wall"] + a) * uy
    dx, dy = xx - cx, yy - cy
    p_ax, q_ax = dx * ux + dy * uy, -dx * uy + dy * ux
    cavity = _soft_ellipse(p_ax, q_ax, a, b)
    myo = np.maximum(_soft_ellipse(p_ax, q_ax, a + wall, b + wall) - cavity, 0.0)
    # right ventricle beside the LV (image left in an apical 4-chamber view), left atrium below the base
    rv_q = -(params["b_ed"] + 2.2 * params["wall"] + 0.6 * params["b_ed"])
    rv = _soft_ellipse(p_ax + 0.12 * params["a_ed"], q_ax + rv_q, 0.8 * a, 0.6 * b)
    la_p = a + wall + 0.45 * params["a_ed"] + 2.0
    la = _soft_ellipse(p_ax - la_p, q_ax, 0.4 * params["a_ed"] * (1.2 - 0.2 * s), 0.55 * params["a_ed"])

    level = 0.30 + 0.45 * myo
    for m in (rv, la, cavity):
        level = level * (1.0 - m) + 0.04 * m

    # speckle: Rayleigh amplitude, mostly static tissue texture plus a decorrelating part per frame (mean 1 overall)
    sigma = math.sqrt(2.0 / math.pi)

    def _rayleigh(shape: tuple[int, ...]) -> np.ndarray:
        re = rng.standard_normal(shape, dtype=np.float32)
        im = rng.standard_normal(shape, dtype=np.float32)
        return np.sqrt(re * re + im * im) * (sigma / math.sqrt(2.0))

    static = cv2.GaussianBlur(_rayleigh((size, size)), (5, 3), 0)  # laterally elongated speckle
    # the per-frame part only needs to decorrelate; uniform noise is ~4x cheaper to draw than Rayleigh
    speckle = 0.7 * static / static.mean() + 0.6 * rng.random((n, size, size), dtype=np.float32)

    # sector (fan) geometry: apex at the top centre
    ax, ay, radius = size / 2.0, 2.0, 108.0
    depth = np.sqrt((xx - ax) ** 2 + (yy - ay) ** 2)
    angle = np.arctan2(xx - ax, yy - ay)
    fan = np.clip((radius - depth) * 0.5, 0.0, 1.0) * np.clip(
        (params["sector_half_angle"] - np.abs(angle)) * 60.0, 0.0, 1.0
    )
    attenuation = (1.15 - 0.45 * depth / radius) * params["gain"]
    clutter = 0.25 * np.exp(-depth / 10.0)  # near-field haze at the transducer
    img = (level * speckle * attenuation + clutter) * fan
    return np.clip(img * 255.0, 0.0, 255.0).astype(np.uint8)


def _split_counts(n: int, splits: Sequence[float]) -> list[int]:
    fr = np.asarray(splits, dtype=np.float64)
    if fr.shape != (3,) or np.any(fr < 0) or fr.sum() <= 0:
        raise ValueError(f"splits must be three non-negative fractions (TRAIN, VAL, TEST), got {tuple(splits)}.")
    fr = fr / fr.sum()
    counts = np.floor(fr * n).astype(int)
    for i in np.argsort(-(fr * n - counts))[: n - counts.sum()]:
        counts[i] += 1
    # every split asked for gets at least one video when there are enough videos
    for i in np.nonzero((fr > 0) & (counts == 0))[0]:
        j = int(np.argmax(counts))
        if counts[j] > 1:
            counts[j] -= 1
            counts[i] += 1
    return [int(c) for c in counts]


def _write_avi(path: str, frames: np.ndarray, fps: int) -> None:
    """Write grey frames (T, H, W) as a colour MJPG AVI, atomically, and check OpenCV reads it back."""
    with atomic_path(path, suffix=".avi") as tmp:
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*_CODEC), float(fps), (_SIZE, _SIZE), True)
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {_CODEC} AVI files ({tmp}); check the opencv-python install.")
        try:
            for frame in frames:
                writer.write(np.ascontiguousarray(np.repeat(frame[:, :, None], 3, axis=2)))
        finally:
            writer.release()
        cap = cv2.VideoCapture(tmp)
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else -1
            ok = cap.read()[0] if cap.isOpened() else False
        finally:
            cap.release()
        if not ok or count != len(frames):
            raise RuntimeError(f"round trip failed for {path}: wrote {len(frames)} frames, OpenCV reads {count}.")


def _read_params(path: str) -> dict | None:
    try:
        with open(path) as f:
            out = json.load(f)
        return out if isinstance(out, dict) else None
    except (OSError, ValueError):
        return None


def generate_echo_demo(
    output_dir: str,
    num_videos: int = 300,
    seed: int = 0,
    frames: tuple[int, int] = (64, 128),
    overwrite: bool = False,
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> str:
    """
    Write a deterministic synthetic EchoNet-Dynamic dataset: ``FileList.csv`` and ``Videos/<FileName>.avi``.

    Videos are 112x112 colour MJPG AVIs at a random frame rate (about 50 +/- 7 fps) and heart rate (50-110 bpm);
    ``FileName`` has no extension, as in the release; EF/ESV/EDV come from the area-length volumes of the drawn
    cavity (see the module docstring) and EF is distributed roughly like EchoNet-Dynamic's (mean ~56 %, sd ~12 %,
    a tail of reduced EF below 40 %). The generation is cached: a second call with the same arguments returns at
    once. ``FileList.csv`` is written last (atomically), so an interrupted run is redone by the next call.

    Args:
        output_dir: the EchoNet root to create.
        num_videos: number of videos.
        seed: seed of all randomness (``numpy.random.default_rng``); video ``i`` depends only on ``(seed, i)``.
        frames: inclusive range of the number of frames per video. The default keeps every video at least
            64 frames long, one 32-frame clip at period 2, so that demo runs never need padding.
        overwrite: regenerate even if a matching demo exists; also allows writing into a folder that holds a
            ``FileList.csv`` not made by this function (without it that raises, to protect real datasets).
        splits: fractions of TRAIN, VAL and TEST videos.

    Returns:
        ``output_dir`` (absolute), to pass to :py:func:`monai_contrastive.data.echonet.load_echonet_filelist`.

    Raises:
        FileExistsError: ``output_dir`` holds a ``FileList.csv`` that this function did not write.
        ValueError: invalid arguments.
    """
    if num_videos < 1:
        raise ValueError(f"num_videos must be >= 1, got {num_videos}.")
    if len(frames) != 2 or frames[0] < 1 or frames[1] < frames[0]:
        raise ValueError(f"frames must be (min, max) with 1 <= min <= max, got {frames}.")
    counts = _split_counts(num_videos, splits)
    output_dir = os.path.abspath(os.path.expanduser(str(output_dir)))
    csv_path = os.path.join(output_dir, "FileList.csv")
    params_path = os.path.join(output_dir, PARAMS_FILE)
    video_dir = os.path.join(output_dir, "Videos")
    params = {
        "generator": "monai_contrastive.data.synthetic_echo.generate_echo_demo",
        "version": _VERSION,
        "num_videos": int(num_videos),
        "seed": int(seed),
        "frames": [int(frames[0]), int(frames[1])],
        "splits": [float(s) for s in splits],
        "codec": _CODEC,
    }

    previous = _read_params(params_path)
    if os.path.isfile(csv_path):
        if previous is None and not overwrite:
            raise FileExistsError(
                f"{output_dir} holds a FileList.csv that generate_echo_demo did not write (a real dataset?); "
                "refusing to overwrite it. Pass overwrite=True or choose another folder."
            )
        if previous == params and not overwrite:
            with open(csv_path, newline="") as f:
                names = [row["FileName"] for row in csv.DictReader(f)]
            if len(names) == num_videos and all(os.path.isfile(os.path.join(video_dir, f"{n}.avi")) for n in names):
                return output_dir
        if previous is not None:
            # an earlier demo with other arguments: drop its videos so that no orphan is left behind
            with open(csv_path, newline="") as f:
                for row in csv.DictReader(f):
                    old = os.path.join(video_dir, f"{row.get('FileName', '')}.avi")
                    if os.path.isfile(old):
                        os.remove(old)
        os.remove(csv_path)  # mark the folder incomplete until the new FileList.csv is written

    os.makedirs(video_dir, exist_ok=True)
    atomic_write_json(params, params_path, sync=False)

    split_names = np.repeat(np.array(["TRAIN", "VAL", "TEST"]), counts)
    split_names = split_names[np.random.default_rng(seed).permutation(num_videos)]
    rows, used = [], set()
    for i in range(num_videos):
        p = draw_echo_params(i, seed=seed, frames=frames)
        name = p["filename"] if p["filename"] not in used else f"{p['filename']}_{i}"
        used.add(name)
        _write_avi(os.path.join(video_dir, f"{name}.avi"), render_echo_video(p), p["fps"])
        rows.append(
            {
                "FileName": name,
                "EF": f"{p['ef']:.6f}",
                "ESV": f"{p['esv']:.6f}",
                "EDV": f"{p['edv']:.6f}",
                "FrameHeight": _SIZE,
                "FrameWidth": _SIZE,
                "FPS": p["fps"],
                "NumberOfFrames": p["num_frames"],
                "Split": split_names[i],
            }
        )

    def write_rows(f) -> None:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(csv_path, write_rows, suffix=".csv", sync=False)
    return output_dir

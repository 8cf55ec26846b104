"""Synthetic hip X-ray crops with a bone-mineral-density label: the embedded demo data of ``adacon_bmd_xray``.

The AdaCon paper (Dai et al., "Adaptive contrast for image regression in computer-aided disease assessment",
IEEE TMI 2021) regresses the femoral-neck BMD measured by DXA from hip radiograph crops; its private dataset has
1.31 films per patient, every film of a patient sharing that patient's DXA reading. This module draws a small
cohort with the same structure so that the bundle runs with no data given, written in the on-disk format a real
dataset uses (a Decathlon-style datalist JSON plus 8-bit PNG files).

The image model, per patient:

* anatomy that does **not** depend on the label: femur size, head radius, neck length / width / neck-shaft angle,
  shaft tilt, soft-tissue thickness (body habitus), pelvis placement;
* a latent "radiographic density" correlated with the label but not equal to it (X-ray appearance and the DXA
  reading disagree in reality too), which drives cortical thickness and density, trabecular density, trabecular
  bone volume fraction (how much of the texture is bone) and trabecular spacing, each with its own small noise.

and per film, independent nuisances: rotation, scale, translation, detector blur, automatic windowing with a
random margin, gamma, gain, offset, a heel-effect gradient and additive noise. The projection is rendered as an
attenuation map (chord lengths through cylinders / spheres, so cortical edges look brighter as on real films)
that is windowed for display, so absolute brightness is a weak cue and the label has to be read from contrast,
cortex and texture.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np
from PIL import Image

from monai_contrastive.data.cache import generated_dataset_cached
from monai_contrastive.io import atomic_path, atomic_write_json

__all__ = ["generate_bmd_demo", "BMD_MEAN", "BMD_STD", "BMD_RANGE", "FILMS_PER_PATIENT_PROBS"]

BMD_MEAN = 0.70
"""Mean of the synthetic BMD labels (g/cm^2)."""
BMD_STD = 0.13
"""Standard deviation of the synthetic BMD labels before clipping (g/cm^2)."""
BMD_RANGE = (0.35, 1.15)
"""Labels are clipped to this range (g/cm^2)."""
FILMS_PER_PATIENT_PROBS = (0.75, 0.18, 0.07)
"""Probability of 1, 2 and 3 films per patient (expected 1.32; the paper's dataset has 1.31)."""

# bump whenever the image model changes, so that cached demo folders are regenerated
_GENERATOR_VERSION = 3
# how strongly the latent radiographic density follows the DXA label; caps the attainable R^2 near rho^2
_LABEL_IMAGE_CORRELATION = 0.95
# display nuisances per film: white point of the window (multiple of median - black point), gamma (log-normal sd),
# gain; they hide the density in the contrast, so they set the signal-to-nuisance ratio of the task. Version 2 drew
# (2.4, 3.4), 0.15 and (0.8, 1.1): a +-17 % window swing against a 12 % cortical-density change per label sd left
# the from-scratch CPU demo at validation R^2 ~0.3 (issue 11); version 3 narrows them to what one exposure
# protocol and one display pipeline give
_WINDOW_RANGE = (2.7, 3.1)
_GAMMA_SD = 0.08
_GAIN_RANGE = (0.9, 1.05)
_DATALIST_NAME = "dataset.json"
_PARAMS_NAME = "demo_params.json"
_IMAGE_DIR = "images"
_IMAGE_NAME_RE = re.compile(r"^P\d+_\d+\.png$")


def generate_bmd_demo(
    output_dir: str,
    num_patients: int = 240,
    seed: int = 0,
    image_size: int = 256,
    test_fraction: float = 0.2,
    overwrite: bool = False,
) -> str:
    """Write a synthetic hip X-ray BMD regression dataset and return the path of its datalist.

    Files written under ``output_dir``: ``images/<patient>_<film>.png`` (8-bit grayscale, ``image_size``
    squared), ``demo_params.json`` (the parameters below) and, last, ``dataset.json``::

        {"name": ..., "description": ..., "label_mean": ..., "label_std": ..., "numTraining": ..., "numTest": ...,
         "training": [{"image": "images/P0001_0.png", "label": 0.7123, "patient": "P0001"}, ...],
         "testing": [...]}

    Image paths are relative to the JSON's folder, as ``monai.data.load_decathlon_datalist`` resolves them.
    ``testing`` holds whole patients (``test_fraction`` of them) that never appear in ``training``;
    ``label_mean`` / ``label_std`` are computed over the training items. Each patient has one label drawn from
    ``N(0.70, 0.13)`` clipped to ``[0.35, 1.15]`` g/cm^2 and 1-3 films (probabilities 0.75 / 0.18 / 0.07), all
    sharing the label.

    The output is deterministic for a given set of parameters, and patient ``i`` is the same whatever
    ``num_patients`` is (only the train/test split changes). Generation is skipped when ``dataset.json`` exists,
    ``demo_params.json`` matches the parameters and every listed image exists, unless ``overwrite`` is set.
    ``dataset.json`` is written last through a temporary file, so an interrupted generation is redone by the
    next call. About 25-40 ms per 256x256 image on one CPU core (the default cohort, ~325 images: 8-13 s).

    Args:
        output_dir: folder to write into (created if needed).
        num_patients: number of patients in the cohort (training + testing).
        seed: seed of the ``numpy.random.SeedSequence`` from which every patient's ``default_rng`` is spawned.
        image_size: side length of the square images in pixels (at least 32).
        test_fraction: fraction of patients held out in ``testing``; at least one patient when > 0.
        overwrite: regenerate even when a matching cached dataset exists.

    Returns:
        The path of ``<output_dir>/dataset.json``.

    Raises:
        ValueError: when a parameter is out of range.
    """
    num_patients, seed, image_size, test_fraction = _check_params(num_patients, seed, image_size, test_fraction)
    output_dir = os.path.expanduser(os.fspath(output_dir))
    datalist_path = os.path.join(output_dir, _DATALIST_NAME)
    params_path = os.path.join(output_dir, _PARAMS_NAME)
    params = {
        "generator": "bmd_xray",
        "version": _GENERATOR_VERSION,
        "num_patients": num_patients,
        "seed": seed,
        "image_size": image_size,
        "test_fraction": test_fraction,
    }
    if not overwrite and generated_dataset_cached(
        output_dir, datalist_path, params_path, params, ("training", "testing"), path_keys=("image",)
    ):
        return datalist_path

    image_dir = os.path.join(output_dir, _IMAGE_DIR)
    os.makedirs(image_dir, exist_ok=True)
    # removed first so that a generation killed half-way is never mistaken for a complete one
    if os.path.exists(datalist_path):
        os.remove(datalist_path)

    root = np.random.SeedSequence(seed)
    # child 0 draws the split; child i + 1 draws patient i, independent of num_patients
    split_seq, *patient_seqs = root.spawn(num_patients + 1)
    grid = _Grid(image_size)
    width = max(4, len(str(num_patients)))
    patients: list[dict[str, Any]] = []
    written: set[str] = set()
    for index, patient_seq in enumerate(patient_seqs):
        rng = np.random.default_rng(patient_seq)
        patient_id = f"P{index + 1:0{width}d}"
        anatomy = _draw_patient(rng)
        num_films = int(rng.choice(len(FILMS_PER_PATIENT_PROBS), p=FILMS_PER_PATIENT_PROBS)) + 1
        items = []
        for film in range(num_films):
            name = f"{patient_id}_{film}.png"
            _write_png(os.path.join(image_dir, name), _render_film(anatomy, rng, grid))
            written.add(name)
            items.append({"image": f"{_IMAGE_DIR}/{name}", "label": anatomy["label"], "patient": patient_id})
        patients.append({"id": patient_id, "items": items})
    _remove_stale_images(image_dir, written)

    num_test = 0
    if test_fraction > 0:
        num_test = min(max(1, int(round(test_fraction * num_patients))), num_patients - 1)
    order = np.random.default_rng(split_seq).permutation(num_patients)
    test_ids = set(order[:num_test].tolist())
    training = [it for i, p in enumerate(patients) if i not in test_ids for it in p["items"]]
    testing = [it for i, p in enumerate(patients) if i in test_ids for it in p["items"]]
    train_labels = np.array([it["label"] for it in training], dtype=np.float64)
    datalist = {
        "name": "bmd_xray_demo",
        "description": (
            "Synthetic hip X-ray crops with femoral-neck bone mineral density labels (g/cm^2), generated by "
            "monai_contrastive.data.synthetic_bmd.generate_bmd_demo for demos and tests; not real patients."
        ),
        "reference": "Dai et al., Adaptive contrast for image regression in computer-aided disease assessment, 2021",
        "licence": "CC0-1.0 (synthetic)",
        "tensorImageSize": "2D",
        "modality": {"0": "X-ray"},
        "label_mean": round(float(train_labels.mean()), 6),
        "label_std": round(float(train_labels.std()), 6),
        "numPatientsTraining": num_patients - num_test,
        "numPatientsTest": num_test,
        "numTraining": len(training),
        "numTest": len(testing),
        "training": training,
        "testing": testing,
    }
    atomic_write_json(params, params_path, indent=1)
    atomic_write_json(datalist, datalist_path, indent=1)
    return datalist_path


def _check_params(num_patients: Any, seed: Any, image_size: Any, test_fraction: Any) -> tuple[int, int, int, float]:
    if isinstance(num_patients, bool) or int(num_patients) != num_patients or num_patients < 1:
        raise ValueError(f"num_patients must be a positive integer, got {num_patients!r}.")
    if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32, got {image_size!r}.")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    test_fraction = float(test_fraction)
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}.")
    if test_fraction > 0 and num_patients < 2:
        raise ValueError(f"test_fraction > 0 needs at least 2 patients, got num_patients={num_patients}.")
    return int(num_patients), int(seed), int(image_size), test_fraction


def _write_png(path: str, image: np.ndarray) -> None:
    # via a temporary file: another process (e.g. a second DDP rank) may be reading the same cache
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(image).save(tmp, format="PNG", compress_level=1)


def _remove_stale_images(image_dir: str, keep: set[str]) -> None:
    """Delete PNGs of an earlier, larger generation so the cache holds only the current dataset."""
    for name in os.listdir(image_dir):
        if _IMAGE_NAME_RE.match(name) and name not in keep:
            os.remove(os.path.join(image_dir, name))


class _Grid:
    """Pixel-centre coordinates in image-width units, centred on the image, and FFT frequencies."""

    def __init__(self, size: int) -> None:
        self.size = size
        # float32: the transcendental functions on the full grid dominate the run time
        c = ((np.arange(size) + 0.5) / size - 0.5).astype(np.float32)
        self.y, self.x = np.meshgrid(c, c, indexing="ij")
        # rfft2 frequency grid in cycles per pixel
        fy = np.fft.fftfreq(size)[:, None]
        fx = np.fft.rfftfreq(size)[None, :]
        self.freq = np.hypot(fy, fx)
        self.freq_angle = np.arctan2(fy, fx) * np.ones_like(self.freq)
        self.freq[0, 0] = 1e-6  # DC: kept finite for the log band-pass, zeroed by the filter anyway
        self.rfft_shape = self.freq.shape


def _draw_patient(rng: np.random.Generator) -> dict[str, Any]:
    """Per-patient label, label-driven densities and label-independent anatomy (lengths in image widths)."""
    label = round(float(np.clip(rng.normal(BMD_MEAN, BMD_STD), *BMD_RANGE)), 4)
    z = (label - BMD_MEAN) / BMD_STD
    rho = _LABEL_IMAGE_CORRELATION
    z_img = rho * z + np.sqrt(1.0 - rho**2) * rng.normal()

    def cue(noise_sd: float) -> float:
        # each pathway reads the latent density with its own error, so combining cues beats any single one
        return float(z_img + noise_sd * rng.normal())

    def uniform(low: float, high: float) -> float:
        return float(rng.uniform(low, high))

    size = uniform(0.9, 1.1)
    head_radius = size * 0.11 * uniform(0.92, 1.08)
    return {
        "label": label,
        # label-driven: densities relative to soft tissue, cortical thickness ratio, trabecular texture
        # (version 3: density effects per label sd raised from 12 % / 20 % to 20 % / 30 %, cortex and bone fraction
        # by half again, so that the density reads through the display nuisances at the demo's 64 x 64)
        "mu_cortex": 5.0 * (1.0 + 0.2 * cue(0.4)),
        "mu_trabecular": 2.2 * (1.0 + 0.3 * cue(0.4)),
        "cortex_ratio": float(np.clip(0.3 + 0.075 * cue(0.5), 0.12, 0.5)),
        "bone_fraction": float(np.clip(0.4 + 0.12 * cue(0.5), 0.12, 0.65)),
        "trabecular_cycles": float(np.clip(30.0 + 4.0 * cue(0.6), 16.0, 48.0)),
        "mu_pelvis": 3.0 * (1.0 + 0.06 * cue(1.0)),
        # label-independent anatomy
        "head_x": -0.2 + uniform(-0.03, 0.03),
        "head_y": -0.16 + uniform(-0.03, 0.03),
        "head_radius": head_radius,
        "neck_angle": float(np.deg2rad(np.clip(rng.normal(128.0, 5.0), 115.0, 142.0))),
        "neck_length": size * uniform(0.24, 0.3),
        "neck_halfwidth": head_radius * uniform(0.62, 0.74),
        "shaft_halfwidth": size * uniform(0.082, 0.098),
        "shaft_tilt": uniform(-0.06, 0.06),
        "trochanter_radius": size * uniform(0.062, 0.078),
        "acetabulum_gap": uniform(1.06, 1.16),
        "pelvis_dx": uniform(-0.04, 0.04),
        "pelvis_dy": uniform(-0.04, 0.04),
        "soft_tissue": uniform(1.0, 1.4),
        "thigh_radius": uniform(0.5, 0.8),
    }


def _segment_distance(x: np.ndarray, y: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    x0, y0 = float(p0[0]), float(p0[1])
    dx, dy = float(p1[0]) - x0, float(p1[1]) - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(x - x0 - t * dx, y - y0 - t * dy)


def _chord(distance: np.ndarray, radius: float) -> np.ndarray:
    """Path length through a cylinder / sphere of ``radius`` at ``distance`` from its axis / centre."""
    return 2.0 * np.sqrt(np.clip(radius * radius - distance * distance, 0.0, None))


def _soft_union(chords: list[np.ndarray]) -> np.ndarray:
    # a 6-norm instead of max: blends the parts of the femur without creases at the junctions
    total = 0.0
    for c in chords:
        c2 = c * c
        total = total + c2 * c2 * c2
    return np.sqrt(np.cbrt(total))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _render_film(p: dict[str, Any], rng: np.random.Generator, grid: _Grid) -> np.ndarray:
    """Render one film of patient ``p`` with fresh nuisances; returns an ``(H, W)`` uint8 image."""
    size = grid.size

    def uniform(low: float, high: float) -> float:
        # python floats keep the float32 grid arithmetic in float32
        return float(rng.uniform(low, high))

    # film pose: canonical coordinates q = R(-angle) (x - shift) / scale
    angle = np.deg2rad(uniform(-15.0, 15.0))
    scale = uniform(0.9, 1.1)
    gx, gy = grid.x - uniform(-0.08, 0.08), grid.y - uniform(-0.08, 0.08)
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    x = (cos * gx + sin * gy) / scale
    y = (-sin * gx + cos * gy) / scale

    # femur: head (sphere), neck and shaft (cylinders), trochanters (spheres)
    head = np.array([p["head_x"], p["head_y"]])
    r_head = p["head_radius"]
    neck_dir = np.array([np.cos(p["neck_angle"] - np.pi / 2), np.sin(p["neck_angle"] - np.pi / 2)])
    neck_base = head + p["neck_length"] * neck_dir
    w_shaft = p["shaft_halfwidth"]
    shaft_top = neck_base + np.array([0.01, -0.03])
    shaft_bottom = np.array([shaft_top[0] + p["shaft_tilt"], 1.2])
    greater = shaft_top + np.array([0.55 * w_shaft, -0.05])
    lesser = np.array([shaft_top[0] - 0.95 * w_shaft, neck_base[1] + 0.13])
    hx, hy = float(head[0]), float(head[1])
    c = p["cortex_ratio"]
    d_head = np.hypot(x - hx, y - hy)
    parts = [
        (d_head, r_head, 0.2 * c),
        (_segment_distance(x, y, head, neck_base), p["neck_halfwidth"], 0.45 * c),
        (_segment_distance(x, y, shaft_top, shaft_bottom), w_shaft, c),
        (np.hypot(x - float(greater[0]), y - float(greater[1])), p["trochanter_radius"], 0.25 * c),
        (np.hypot(x - float(lesser[0]), y - float(lesser[1])), 0.03, 0.3 * c),
    ]
    outer = _soft_union([_chord(d, r) for d, r, _ in parts])
    inner_parts = [_chord(d, r * (1.0 - cr)) for d, r, cr in parts]
    inner = _soft_union(inner_parts)
    # below the lesser trochanter the medullary canal holds marrow, not trabecular bone
    inner_parts[2] = inner_parts[2] * _sigmoid((float(lesser[1]) - y) / 0.03)
    trabecular_space = _soft_union(inner_parts)

    # trabecular texture: oriented band-pass noise thresholded to the bone volume fraction
    cycles = p["trabecular_cycles"] / scale / size
    band = np.exp(-(np.log(grid.freq / cycles) ** 2) / (2 * 0.3**2))
    # stripes run along the neck (principal compressive trabeculae): their frequency vector is across it
    stripe_angle = np.arctan2(neck_dir[1], neck_dir[0]) + angle + np.pi / 2
    band *= 1.0 + 1.5 * np.cos(grid.freq_angle - stripe_angle) ** 2
    band[0, 0] = 0.0
    spectrum = rng.standard_normal(grid.rfft_shape) + 1j * rng.standard_normal(grid.rfft_shape)
    noise = np.fft.irfft2(band * spectrum, s=(size, size)).astype(np.float32)
    noise = (noise - noise.mean()) / (noise.std() + 1e-12)
    threshold = float(np.quantile(noise[::2, ::2], 1.0 - p["bone_fraction"]))
    trabeculae = _sigmoid((noise - threshold) / 0.5)

    femur = p["mu_cortex"] * (outer - inner) + p["mu_trabecular"] * trabecular_space * (0.55 + 0.9 * trabeculae)
    femur += 0.15 * (inner - trabecular_space)  # marrow

    # pelvis: ilium with the acetabular socket cut out, sourcil (dense roof), ischium with obturator foramen
    r_acetabulum = r_head * p["acetabulum_gap"]
    px, py = hx + p["pelvis_dx"], hy + p["pelvis_dy"]
    d_ilium = np.hypot((x - px + 0.22) / 0.42, (y - py + 0.3) / 0.4)
    ilium = 0.1 * _sigmoid((1.0 - d_ilium) / 0.03) * _sigmoid((d_head - r_acetabulum) / 0.006)
    roof = _sigmoid((hy - 0.2 * r_head - y) / 0.01) * _sigmoid((hx + 0.9 * r_head - x) / 0.01)
    sourcil = 0.04 * np.exp(-(((d_head - r_acetabulum) / 0.008) ** 2)) * roof
    d_ischium = np.hypot((x - px + 0.2) / 0.2, (y - py - 0.4) / 0.17)
    d_foramen = np.hypot((x - px + 0.14) / 0.1, (y - py - 0.44) / 0.075)
    ischium = 0.045 * _sigmoid((1.0 - d_ischium) / 0.04) * _sigmoid((d_foramen - 1.0) / 0.05)
    pelvis = p["mu_pelvis"] * (ilium + sourcil + ischium)

    # soft tissue: thigh around the shaft, thicker over the pelvis, plus a smooth random field
    thigh = np.sqrt(np.clip(1.0 - ((x - float(shaft_top[0])) / p["thigh_radius"]) ** 2, 0.0, None))
    body = _sigmoid((hy + 0.05 - y) / 0.15)
    field = 0.0
    for _ in range(3):
        kx, ky, phase = uniform(-1.5, 1.5), uniform(-1.5, 1.5), uniform(0.0, 2 * np.pi)
        field = field + uniform(0.02, 0.06) * np.cos(2 * np.pi * (kx * grid.x + ky * grid.y) + phase)
    attenuation = p["soft_tissue"] * (0.6 + 0.35 * thigh + 0.3 * body + field) + femur + pelvis

    # detector blur in the Fourier domain (Gaussian, sigma in pixels of a 256 image)
    sigma = uniform(0.4, 1.3) * size / 256.0
    otf = np.exp(-2.0 * (np.pi * sigma * grid.freq) ** 2)
    attenuation = np.fft.irfft2(np.fft.rfft2(attenuation) * otf, s=(size, size)).astype(np.float32)

    # display: a window referenced to the soft tissue (black point below the thinnest tissue, white point a random
    # multiple of the median above it), then gamma, gain, offset, heel effect and noise
    lo, median = np.quantile(attenuation[::4, ::4], [0.01, 0.5]).tolist()
    lo *= uniform(0.55, 0.95)
    hi = lo + (median - lo) * uniform(*_WINDOW_RANGE)
    image = np.clip((attenuation - lo) / (hi - lo), 0.0, 1.0) ** float(np.exp(rng.normal(0.0, _GAMMA_SD)))
    heel = 1.0 + float(rng.normal(0.0, 0.08)) * grid.x + float(rng.normal(0.0, 0.08)) * grid.y
    image = image * uniform(*_GAIN_RANGE) * heel + float(rng.normal(0.0, 0.04))
    image += uniform(0.008, 0.035) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)

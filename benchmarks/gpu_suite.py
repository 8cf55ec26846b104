"""One benchmark command for the papers' settings on one GPU: training steps, data pipelines, losses at scale and
inference per case, built from the bundles' own configs.

    python benchmarks/gpu_suite.py            # one GPU, papers' sizes: benchmarks/results/gpu_suite.{md,json}
    python benchmarks/gpu_suite.py --smoke    # the same code at tiny sizes on the CPU: gpu_suite_smoke.{md,json}

Sections (a row is skipped, with a line saying why, when its bundle or module is not present):

1. Training step at the paper's settings, synthetic tensors already on the device, through the bundle's own
   network, loss, optimizer and ``PrepareViewBatch`` (``monai.bundle.ConfigParser`` on the bundle's train config)
   in :class:`~monai_contrastive.engines.MultiViewTrainer`: median step time, images/s, peak memory, in fp32 and
   under MONAI's autocast (fp16 with its gradient scaler; bf16), against plain supervised training of the same
   backbone with a plain loss (``SupervisedTrainer``, same images per step), rounds interleaved.
2. Data pipeline: the bundle's ``train#dataloader`` on its generated demo data with the bundle's worker settings,
   images/s delivered, against the images/s the step of section 1 consumes.
3. Contrastive losses at scale: AdaCon / SupCon (this package) vs pytorch-metric-learning's ``SupConLoss``, fwd+bwd,
   N = 512 ... 16384, D = 128; the LRC loss and InfoNCE with the bundles' queue of 65,536 at the bundles' sizes; the
   DCC-CL loss at 2n = 8 (the bundle's batch), 512 and 4096; CLEF's discriminativeness and equivariance losses at
   192³.
4. Inference per case: the bundle's inference network and inferer (``inference.json``) on one case of the real size
   (preprocessing not included): one X-ray, one echo video (all clips), one CT volume; on the GPU and on the CPU.

New bundles add one entry to ``STEPS`` / ``PIPELINES`` / ``INFERENCE`` (a config, overrides, a synthetic batch); an
entry is skipped, with a line saying why, while its bundle folder or a module it needs is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import monai  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402
from monai.engines import SupervisedTrainer  # noqa: E402

from monai_contrastive.engines import MultiViewTrainer  # noqa: E402

BUNDLES = os.path.join(ROOT, "bundles")


# ----------------------------------------------------------------------------------------------------------- helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def _quantile(values: list[float], q: float) -> float:
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def timed_rounds(fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int) -> dict:
    """Median / p10 / p90 seconds per call of each function, the functions interleaved round by round (order
    rotating) so that a change of load hits all alike; peak memory per function from its own warm-up call."""
    names = list(fns)
    peaks = {}
    for name in names:
        _reset_peak(device)
        for _ in range(warmup if device.type == "cpu" else max(1, warmup)):  # a CUDA peak needs one call
            fns[name]()
        _sync(device)
        peaks[name] = _peak_mib(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            _sync(device)
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {
        n: {
            "median_s": statistics.median(t),
            "p10_s": _quantile(t, 0.1),
            "p90_s": _quantile(t, 0.9),
            "repeats": len(t),
            "peak_mib": peaks[n],
        }
        for n, t in times.items()
    }


def parse_config(bundle: str, files: list[str], overrides: dict[str, Any]) -> ConfigParser:
    """A bundle config (a file plus override files, as ``monai.bundle run`` merges them) with ``overrides``."""
    parser = ConfigParser()
    parser.read_config([os.path.join(BUNDLES, bundle, "configs", f) for f in files])
    parser["bundle_root"] = os.path.join(BUNDLES, bundle)
    for k, v in overrides.items():
        parser[k] = v
    return parser


def _missing(bundle: str, modules: tuple[str, ...] = ()) -> str | None:
    """Why an entry is skipped (its bundle folder or a module it needs is missing), or None."""
    if not os.path.isdir(os.path.join(BUNDLES, bundle, "configs")):
        return f"bundle `bundles/{bundle}` not present"
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError as e:
            return f"module `{m}` not importable ({e})"
    return None


# ------------------------------------------------------------------------------------------- 1. training steps
@dataclass
class Sizes:
    """The sizes of one run: the papers' (GPU) or tiny ones (``--smoke``)."""

    smoke: bool

    def pick(self, full: Any, tiny: Any) -> Any:
        return tiny if self.smoke else full


@dataclass
class StepSpec:
    """A training step of a bundle: its train config, the overrides that replace data-fitted values, a synthetic
    batch as the bundle's data loader delivers it, and the plain supervised baseline of the same backbone.

    ``batch(sizes, generator)`` returns ``(batch dict, images per step)`` (views counted);
    ``baseline(parser, sizes, generator)`` returns ``(network, loss, images (B, ...), targets)`` for
    ``SupervisedTrainer``.
    """

    name: str
    bundle: str
    files: list[str]
    batch: Callable
    baseline: Callable
    overrides: Callable = lambda sizes: {}
    modules: tuple[str, ...] = ()
    paper: str = ""


def _labels(n: int, g: torch.Generator, lo: float = 0.6, hi: float = 1.4) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _regression_overrides(sizes: Sizes, mean: float, std: float, norm: list | None = None) -> dict:
    g = torch.Generator().manual_seed(1)
    o = {
        "label_mean": mean,
        "label_std": std,
        "ecdf": {
            "_target_": "monai_contrastive.losses.ECDF",
            "labels": (mean + std * torch.randn(500, generator=g)).tolist(),
        },
        "pretrained_path": "",
    }
    if norm is not None:
        o["normalization"] = norm
    return o


def _bmd_batch(sizes: Sizes, g: torch.Generator):
    b, v, s = sizes.pick((8, 8, 128), (2, 2, 32))
    return {"image": torch.rand(b, v, 1, s, s, generator=g), "label": _labels(b, g)}, b * v


def _bmd_baseline(parser: ConfigParser, sizes: Sizes, g: torch.Generator):
    b, v, s = sizes.pick((8, 8, 128), (2, 2, 32))
    net = parser.get_parsed_content("backbone", instantiate=True)
    return net, torch.nn.L1Loss(), torch.rand(b * v, 1, s, s, generator=g), _labels(b * v, g)[:, None]


def _lvef_batch(sizes: Sizes, g: torch.Generator):
    b, t, s = sizes.pick((20, 32, 112), (2, 4, 32))
    clip = lambda: torch.rand(b, 3, t, s, s, generator=g) * 255  # noqa: E731
    return {"image": clip(), "image_2": clip(), "label": _labels(b, g, 20.0, 80.0)}, 2 * b


def _lvef_baseline(parser: ConfigParser, sizes: Sizes, g: torch.Generator):
    b, t, s = sizes.pick((20, 32, 112), (2, 4, 32))
    net = parser.get_parsed_content("backbone", instantiate=True)
    net.fc = torch.nn.Linear(net.fc.in_features, 1)
    return net, torch.nn.MSELoss(), torch.rand(2 * b, 3, t, s, s, generator=g), _labels(2 * b, g, 20.0, 80.0)[:, None]


def _ct_slices(sizes: Sizes, batch_volumes: int):
    return sizes.pick((batch_volumes * 4, 256), (2, 32))


def _regions(n: int, s: int, shift: int = 0) -> torch.Tensor:
    """64 square superpixel-like regions per slice (8 x 8 grid); ``shift`` moves them like a small warp."""
    coarse = torch.arange(1, 65, dtype=torch.float32).reshape(1, 1, 8, 8)
    r = F.interpolate(coarse, size=(s, s), mode="nearest").long().repeat(n, 1, 1, 1)
    return torch.roll(r, shifts=(shift, shift), dims=(2, 3))


def _lrc_batch(sizes: Sizes, g: torch.Generator):
    n, s = _ct_slices(sizes, 8)
    batch = {
        "image": torch.rand(n, 1, s, s, generator=g),
        "image_2": torch.rand(n, 1, s, s, generator=g),
        "regions": _regions(n, s),
        "regions_2": _regions(n, s, shift=max(1, s // 50)),
    }
    return batch, 2 * n


def _moco_batch(sizes: Sizes, g: torch.Generator):
    n, s = _ct_slices(sizes, 8)
    return {"image": torch.rand(n, 1, s, s, generator=g), "image_2": torch.rand(n, 1, s, s, generator=g)}, 2 * n


def _finetune_batch(sizes: Sizes, g: torch.Generator):
    n, s = _ct_slices(sizes, 4)
    return {"image": torch.rand(n, 1, s, s, generator=g), "label": torch.randint(0, 14, (n, 1, s, s), generator=g)}, n


def _unet_baseline(batch_volumes: int, views: int):
    """A plain 2D ``BasicUNet`` with the bundle's feature sizes and MONAI's ``DiceLoss`` on the same number of
    slices per step (the views of a contrastive step count as slices)."""

    def make(parser: ConfigParser, sizes: Sizes, g: torch.Generator):
        n, s = _ct_slices(sizes, batch_volumes)
        n *= views
        features = parser.get("features") or (32, 32, 64, 128, 256, 32)
        net = monai.networks.nets.BasicUNet(2, 1, 14, features=tuple(features))
        loss = monai.losses.DiceLoss(to_onehot_y=True, softmax=True, batch=True)
        return net, loss, torch.rand(n, 1, s, s, generator=g), torch.randint(0, 14, (n, 1, s, s), generator=g)

    return make


def _ct_overrides(sizes: Sizes) -> dict:
    return {"patch_size": sizes.pick(256, 32), "init": "random", "pretrained_path": ""}


def _clef_size(sizes: Sizes) -> int:
    return sizes.pick(192, 32)


def _clef_overrides(sizes: Sizes) -> dict:
    # smoke: a narrow U-Net (the paper's 33 M-parameter one takes seconds a step on a CPU even at 32³)
    return {"spatial_size": [_clef_size(sizes)] * 3, **({"features": [8, 8, 16, 16, 32, 8]} if sizes.smoke else {})}


def _clef_batch(sizes: Sizes, g: torch.Generator):
    """One preprocessed volume as ``CLEFPreprocessd`` + ``RandCLEFAffined`` deliver it: image in (-1, 1), the body
    mask, the voxel spacing in mm after resizing, and the affine ``theta`` of eq. 2 (one draw)."""
    from monai_contrastive.transforms.ct import RandCLEFAffine

    s = _clef_size(sizes)
    image = torch.rand(1, 1, s, s, s, generator=g) * 2 - 1
    body = torch.zeros(1, 1, s, s, s, dtype=torch.bool)
    body[..., s // 8 : s - s // 8, s // 8 : s - s // 8, :] = True
    theta = RandCLEFAffine().set_random_state(0)(spatial_dims=3)[None]
    return {"image": image, "body": body, "spacing_mm": torch.tensor([[1.8, 1.8, 2.0]]), "clef_theta": theta}, 1


def _clef_baseline(parser: ConfigParser, sizes: Sizes, g: torch.Generator):
    """The fine-tuning network of the same backbone (``CLEFSegNet``, 13 organ channels) with the bundle's
    fine-tuning loss (Dice + CE per organ) on one labelled volume."""
    from monai_contrastive.losses import OrganDiceCELoss
    from monai_contrastive.networks import CLEFSegNet

    s = _clef_size(sizes)
    net = CLEFSegNet(spatial_dims=3, in_channels=1, out_channels=13, features=tuple(parser.get("features")))
    label = torch.randint(0, 14, (1, 1, s, s, s), generator=g)
    return net, OrganDiceCELoss(num_classes=14), torch.rand(1, 1, s, s, s, generator=g) * 2 - 1, label


def _dcc_patches(sizes: Sizes) -> tuple[int, int]:
    return sizes.pick((4, 128), (2, 32))


def _dcc_batch(sizes: Sizes, g: torch.Generator):
    """Two views of ``batch`` organ patches, each ``[image, attention map]`` as the bundle's ``views`` deliver them."""
    b, p = _dcc_patches(sizes)

    def view():
        image = torch.rand(b, 1, p, p, generator=g)
        attention = torch.zeros(b, 1, p, p)
        attention[..., p // 4 : 3 * p // 4, p // 4 : 3 * p // 4] = 1.0
        return torch.cat([image, attention], dim=1)

    return {"image": view(), "image_2": view(), "organ": torch.randint(1, 14, (b,), generator=g)}, 2 * b


def _dcc_baseline(parser: ConfigParser, sizes: Sizes, g: torch.Generator):
    """The same 2-channel ResNet-50 in the bundle's DeepLabV3+ trained plainly with MONAI's binary ``DiceLoss`` on
    the same number of patches (both views counted), i.e. the fine-tuning network without pretraining."""
    from monai_contrastive.networks import dcc_segmentation_net

    b, p = _dcc_patches(sizes)
    net = dcc_segmentation_net(encoder_name=parser.get("encoder_name"), in_channels=2, classes=1)
    x = torch.rand(2 * b, 2, p, p, generator=g)
    y = (torch.rand(2 * b, 1, p, p, generator=g) > 0.5).float()
    return net, monai.losses.DiceLoss(sigmoid=True), x, y


STEPS: list[StepSpec] = [
    StepSpec(
        "AdaCon BMD (EfficientNet-B1, 128², 8 samples x 8 views)",
        "adacon_bmd_xray",
        ["train.json"],
        _bmd_batch,
        _bmd_baseline,
        lambda sizes: _regression_overrides(sizes, 0.85, 0.15),
        paper="AdaCon §IV-A",
    ),
    StepSpec(
        "AdaCon LVEF (R(2+1)D-18, 32 x 112², 20 samples x 2 views)",
        "adacon_lvef_echo",
        ["train.json"],
        _lvef_batch,
        _lvef_baseline,
        lambda sizes: _regression_overrides(sizes, 55.0, 12.0, [[32.0] * 3, [50.0] * 3]),
        modules=("torchvision",),
        paper="AdaCon §IV-B",
    ),
    StepSpec(
        "LRC pretraining (FeatureUNet, 256², 8 volumes x 4 slices, 2 views)",
        "lrc_multiorgan_ct",
        ["pretrain_common.json", "pretrain_lrc.json"],
        _lrc_batch,
        _unet_baseline(8, 2),
        _ct_overrides,
    ),
    StepSpec(
        "MoCo pretraining (U-Net encoder, 256², 8 volumes x 4 slices, queue 65,536)",
        "lrc_multiorgan_ct",
        ["pretrain_common.json", "pretrain_moco.json"],
        _moco_batch,
        _unet_baseline(8, 2),
        _ct_overrides,
    ),
    StepSpec(
        "LRC fused fine-tuning (GlobalLocalUNet, 256², 4 volumes x 4 slices)",
        "lrc_multiorgan_ct",
        ["train.json"],
        _finetune_batch,
        _unet_baseline(4, 1),
        _ct_overrides,
    ),
    StepSpec(
        "CLEF pretraining (3D U-Net, 192³, batch 1, decoding + discriminativeness + equivariance)",
        "clef_ct",
        ["pretrain.json"],
        _clef_batch,
        _clef_baseline,
        _clef_overrides,
        modules=("monai_contrastive.losses.clef",),
        paper="CLEF §2.2, §3.2",
    ),
    StepSpec(
        "DCC-CL pretraining (2-channel ResNet-50 + MLP, 128² organ patches, batch 4 x 2 views)",
        "dcc_multiphase_ct",
        ["pretrain.json"],
        _dcc_batch,
        _dcc_baseline,
        lambda sizes: {"pretrain_method": "dcc"},
        modules=("monai_contrastive.losses.dcc", "segmentation_models_pytorch"),
        paper="DCC-CL §3.2, §4.2",
    ),
]


def _trainer(trainer_cls, device, network, optimizer, loss, amp: bool, dtype: torch.dtype | None, **kw):
    amp_kwargs = {"dtype": dtype} if amp and dtype is not None else None
    return trainer_cls(
        device=device,
        max_epochs=1,
        epoch_length=1,
        train_data_loader=[None],
        network=network,
        optimizer=optimizer,
        loss_function=loss,
        amp=amp,
        amp_kwargs=amp_kwargs,
        **kw,
    )


def _precisions(device: torch.device) -> list[tuple[str, bool, torch.dtype | None]]:
    """fp32 everywhere; MONAI's trainers autocast on CUDA only, so fp16 / bf16 rows exist on a GPU."""
    rows = [("fp32", False, None)]
    if device.type == "cuda":
        rows.append(("fp16 autocast", True, torch.float16))
        if torch.cuda.is_bf16_supported():
            rows.append(("bf16 autocast", True, torch.bfloat16))
    return rows


def bench_step(spec: StepSpec, device: torch.device, sizes: Sizes, warmup: int, repeats: int) -> list[dict]:
    """The bundle's training step in each precision against the plain supervised step (fp32 and each autocast)."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for prec, amp, dtype in _precisions(device):
        torch.manual_seed(0)
        parser = parse_config(
            spec.bundle, spec.files, {"device": f"$torch.device('{device}')", **spec.overrides(sizes)}
        )
        network = parser.get_parsed_content("network")
        optimizer = parser.get_parsed_content("optimizer")
        trainer = _trainer(
            MultiViewTrainer,
            device,
            network,
            optimizer,
            parser.get_parsed_content("loss"),
            amp,
            dtype,
            prepare_batch=parser.get_parsed_content("train#prepare_batch"),
        )
        batch, samples = spec.batch(sizes, g)
        batch = {k: v.to(device) for k, v in batch.items()}
        # a fresh parse: the contrastive network wraps (and changes) the parsed backbone instance
        fresh = parse_config(spec.bundle, spec.files, spec.overrides(sizes))
        b_net, b_loss, b_x, b_y = spec.baseline(fresh, sizes, g)
        b_net = b_net.to(device)
        b_opt = torch.optim.SGD(b_net.parameters(), lr=1e-3, momentum=0.9)
        base = _trainer(SupervisedTrainer, device, b_net, b_opt, b_loss, amp, dtype)
        b_batch = {"image": b_x.to(device), "label": b_y.to(device)}

        def step():
            out = trainer._iteration(trainer, batch)
            if not torch.isfinite(out["loss"]).all():
                raise RuntimeError(f"{spec.name}: non-finite loss ({prec})")

        res = timed_rounds(
            {"contrastive": step, "supervised": lambda: base._iteration(base, b_batch)}, device, warmup, repeats
        )
        c, s = res["contrastive"], res["supervised"]
        rows.append(
            {
                "step": spec.name,
                "precision": prec,
                "images_per_step": samples,
                "input": "x".join(map(str, batch["image"].shape)),
                "images_per_step_baseline": int(b_x.shape[0]),
                "median_s": c["median_s"],
                "p10_s": c["p10_s"],
                "p90_s": c["p90_s"],
                "repeats": c["repeats"],
                "images_per_s": samples / c["median_s"],
                "peak_mib": c["peak_mib"],
                "baseline_median_s": s["median_s"],
                "baseline_peak_mib": s["peak_mib"],
                "ratio_vs_supervised": c["median_s"] / s["median_s"],
            }
        )
        print(
            f"[step] {spec.name} {prec}: {c['median_s'] * 1e3:.1f} ms, {samples / c['median_s']:.1f} images/s, "
            f"x{c['median_s'] / s['median_s']:.2f} of supervised",
            flush=True,
        )
    return rows


# ------------------------------------------------------------------------------------------- 2. data pipelines
@dataclass
class PipelineSpec:
    """A bundle's training data pipeline on its demo data; ``overrides(sizes, work)`` points every cache into the
    work folder (and shrinks the demo in a smoke run); ``step`` names the section-1 step that consumes it."""

    bundle: str
    files: list[str]
    step: str
    overrides: Callable
    stacked_views: bool = False
    modules: tuple[str, ...] = ()


def _bmd_pipe(sizes: Sizes, work: str) -> dict:
    return {
        "demo_dir": os.path.join(work, "bmd_demo"),
        "models_dir": os.path.join(work, "bmd_models"),
        # a smaller demo than the bundle's: delivery rate does not depend on the number of items, generation does
        "demo_kwargs": sizes.pick({"num_patients": 64}, {"num_patients": 12, "image_size": 64}),
        **({"batch_size": 2, "num_views": 2, "image_size": [32, 32], "num_workers": 0} if sizes.smoke else {}),
    }


def _lvef_pipe(sizes: Sizes, work: str) -> dict:
    return {
        "demo_dir": os.path.join(work, "echo_demo"),
        "ckpt_dir": os.path.join(work, "echo_models"),
        "video_cache_dir": os.path.join(work, "echo_cache"),
        "demo_kwargs": sizes.pick({"num_videos": 40}, {"num_videos": 8, "frames": [40, 48]}),
        **({"batch_size": 2, "clip_length": 8, "num_workers": 0} if sizes.smoke else {}),
    }


def _ct_pipe(sizes: Sizes, work: str) -> dict:
    return {
        "demo_dir": os.path.join(work, "ct_demo"),
        "ckpt_dir": os.path.join(work, "ct_models"),
        "cache_dir": os.path.join(work, "ct_cache"),
        "demo_kwargs": sizes.pick(
            {"num_labelled": 8, "num_unlabelled": 8, "num_validation": 1, "num_test": 1},
            {"num_labelled": 3, "num_unlabelled": 2, "matrix": 64, "num_validation": 1, "num_test": 1},
        ),
        **({"batch_size": 2, "patch_size": 32, "num_workers": 0} if sizes.smoke else {}),
    }


def _clef_pipe(sizes: Sizes, work: str) -> dict:
    o = _ct_pipe(sizes, work)
    o.update(cache_dir=os.path.join(work, "clef_cache"), spatial_size=[_clef_size(sizes)] * 3)
    o.pop("batch_size", None), o.pop("patch_size", None)
    return o


class _IntensityCoarse(torch.nn.Module):
    """A stand-in coarse network for the data pipeline: 13 "organs" by intensity band inside the body, so every
    organ class is present as in a real abdomen and the patch extraction does its full work (no checkpoint needed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = (x.clamp(0, 1) * 13).long().clamp(max=13)
        return F.one_hot(bands[:, 0], 14).permute(0, 4, 1, 2, 3).float()


def _dcc_pipe(sizes: Sizes, work: str) -> dict:
    o = _ct_pipe(sizes, work)
    o.update(
        cache_dir=os.path.join(work, "dcc_cache"),
        ckpt_dir=os.path.join(work, "dcc_models"),
        coarse_network=_IntensityCoarse(),
        pretrain_method="dcc",
    )
    if sizes.smoke:
        o.update(patch_size=16, coarse_size=[16, 16, 8], patches_per_organ=1)
    return o


PIPELINES: list[PipelineSpec] = [
    PipelineSpec("adacon_bmd_xray", ["train.json"], STEPS[0].name, _bmd_pipe, stacked_views=True),
    PipelineSpec("adacon_lvef_echo", ["train.json"], STEPS[1].name, _lvef_pipe, modules=("torchvision",)),
    PipelineSpec("lrc_multiorgan_ct", ["pretrain_common.json", "pretrain_lrc.json"], STEPS[2].name, _ct_pipe),
    PipelineSpec("lrc_multiorgan_ct", ["pretrain_common.json", "pretrain_moco.json"], STEPS[3].name, _ct_pipe),
    PipelineSpec("lrc_multiorgan_ct", ["train.json"], STEPS[4].name, _ct_pipe),
    PipelineSpec("clef_ct", ["pretrain.json"], STEPS[5].name, _clef_pipe, modules=("monai_contrastive.losses.clef",)),
    PipelineSpec(
        "dcc_multiphase_ct",
        ["pretrain.json"],
        STEPS[6].name,
        _dcc_pipe,
        modules=("monai_contrastive.losses.dcc", "segmentation_models_pytorch"),
    ),
]


def _images(batch: dict, stacked_views: bool) -> int:
    """Images (views counted) in one collated batch, as section 1 counts them: ``image``, ``image_2``, ...; a
    stacked view axis ``(B, V, ...)`` counts B x V."""
    n = 0
    for k, x in batch.items():
        if k == "image" or (k.startswith("image_") and k[6:].isdigit()):
            n += int(x.shape[0]) * (int(x.shape[1]) if stacked_views else 1)
    return n


def bench_pipeline(spec: PipelineSpec, sizes: Sizes, work: str, min_batches: int, min_seconds: float) -> dict:
    parser = parse_config(spec.bundle, spec.files, {"device": "$torch.device('cpu')", **spec.overrides(sizes, work)})
    t0 = time.perf_counter()
    if parser.get("initialize"):
        parser.get_parsed_content("initialize")  # makedirs, determinism, the bundle's own checks and caches
    loader = parser.get_parsed_content("train#dataloader")
    setup = time.perf_counter() - t0
    it = iter(loader)
    first = next(it)  # worker start-up and first fill are not counted
    samples, batches, t0 = 0, 0, time.perf_counter()
    while batches < min_batches or time.perf_counter() - t0 < min_seconds:
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        samples += _images(b, spec.stacked_views)
        batches += 1
    dt = time.perf_counter() - t0
    workers = getattr(loader, "num_workers", 0)
    del it, loader
    return {
        "bundle": spec.bundle,
        "config": "+".join(spec.files),
        "step": spec.step,
        "num_workers": workers,
        "batch_keys": sorted(first),
        "batches": batches,
        "seconds": dt,
        "images_per_s": samples / dt,
        "setup_s": setup,
    }


# --------------------------------------------------------------------------------------------- 3. losses at scale
def bench_losses(device: torch.device, sizes: Sizes, warmup: int, repeats: int) -> list[dict]:
    from monai_contrastive.losses import (
        AdaptiveMarginContrastiveLoss,
        InfoNCELoss,
        LocalRegionContrastLoss,
        SupConLoss,
    )

    try:
        from pytorch_metric_learning.losses import SupConLoss as PMLSupConLoss
    except ImportError:
        PMLSupConLoss = None
    rows = []
    g = torch.Generator().manual_seed(0)
    adacon, supcon = AdaptiveMarginContrastiveLoss(scale=150.0), SupConLoss(scale=150.0)
    for n in sizes.pick([512, 1024, 2048, 4096, 8192, 16384], [64, 128]):
        views = 8
        labels = _labels(n // views, g).repeat_interleave(views).to(device)
        ids = torch.arange(n // views).repeat_interleave(views).to(device)
        phi = labels.argsort().argsort().float().div(n).to(device)
        z = F.normalize(torch.randn(n, 128, generator=g), dim=1).to(device).requires_grad_(True)

        def run(f):
            def _f():
                z.grad = None
                f().backward()

            return _f

        fns = {
            "AdaCon (this package)": run(lambda: adacon(z, phi, ids, labels)),
            "SupCon (this package)": run(lambda: supcon(z, phi, ids, labels)),
        }
        if PMLSupConLoss is not None:
            pml = PMLSupConLoss(temperature=1 / 150.0)
            fns["SupConLoss (pytorch-metric-learning)"] = run(lambda: pml(z, ids))
        res = timed_rounds(fns, device, warmup, repeats)
        ours = res["AdaCon (this package)"]["median_s"]
        for name, r in res.items():
            rows.append({"loss": name, "size": f"N = {n}, D = 128", **r, "ratio_vs_adacon": r["median_s"] / ours})
        print(f"[loss] N={n}: " + ", ".join(f"{k} {v['median_s'] * 1e3:.2f} ms" for k, v in res.items()), flush=True)
    # LRC loss at the pretraining bundle's size: decoder features (32 channels) of 2 views, 8 x 4 slices
    b, s = _ct_slices(sizes, 8)
    fq = torch.randn(b, 32, s, s, generator=g).to(device).requires_grad_(True)
    fp = torch.randn(b, 32, s, s, generator=g).to(device).requires_grad_(True)
    rq, rp = _regions(b, s).to(device), _regions(b, s, shift=max(1, s // 50)).to(device)
    lrc = LocalRegionContrastLoss(temperature=0.07, num_points=100)

    def lrc_step():
        fq.grad = fp.grad = None
        lrc(fq, rq, fp, rp).backward()

    queue_size = sizes.pick(65536, 1024)
    q = F.normalize(torch.randn(b, 128, generator=g), dim=1).to(device).requires_grad_(True)
    k = F.normalize(torch.randn(b, 128, generator=g), dim=1).to(device)
    queue = F.normalize(torch.randn(queue_size, 128, generator=g), dim=1).to(device)
    info = InfoNCELoss(temperature=0.07)

    def info_step():
        q.grad = None
        info(q, k, queue).backward()

    res = timed_rounds({"LRC": lrc_step, "InfoNCE": info_step}, device, warmup, repeats)
    rows.append({"loss": "LocalRegionContrastLoss", "size": f"{b} x 2 views x 32 x {s}², 64 regions", **res["LRC"]})
    rows.append({"loss": "InfoNCELoss (MoCo)", "size": f"batch {b}, queue {queue_size}, D = 128", **res["InfoNCE"]})
    if not _missing("dcc_multiphase_ct", ("monai_contrastive.losses.dcc",)):
        rows += _dcc_losses(device, sizes, g, warmup, repeats)
    if not _missing("clef_ct", ("monai_contrastive.losses.clef",)):
        rows += _clef_losses(device, sizes, g, warmup, repeats)
    return rows


def _dcc_losses(device: torch.device, sizes: Sizes, g: torch.Generator, warmup: int, repeats: int) -> list[dict]:
    """The DCC loss (eq. 1, 2, 4: per-view intensities of 2-channel 128² patches, weights, loss) at the bundle's
    batch (4 patches = 8 views) and at large batches (2n = 512, 4096), 256-d embeddings."""
    from monai_contrastive.losses import DynamicContrastCorrelationLoss

    loss_fn = DynamicContrastCorrelationLoss(0.07, gather_distributed=False)
    rows = []
    for two_n in sizes.pick([8, 512, 4096], [8, 64]):
        p = sizes.pick(128, 16)
        x = torch.rand(two_n, 2, p, p, generator=g)
        x[:, 1] = (x[:, 1] > 0.5).float()
        x = x.to(device)
        z = F.normalize(torch.randn(two_n, 256, generator=g), dim=1).to(device).requires_grad_(True)
        ids = (torch.arange(two_n) % (two_n // 2)).to(device)

        def step():
            z.grad = None
            loss_fn(z, x, ids).backward()

        r = timed_rounds({"dcc": step}, device, warmup, repeats)["dcc"]
        rows.append({"loss": "DynamicContrastCorrelationLoss (DCC-CL eq. 4)", "size": f"2n = {two_n}, D = 256", **r})
    return rows


def _clef_losses(device: torch.device, sizes: Sizes, g: torch.Generator, warmup: int, repeats: int) -> list[dict]:
    """CLEF's discriminativeness (eq. 1, the bundle's 64 anchors x 2048 leaves, >= 10 mm) and equivariance (eq. 2)
    losses on a 32-channel feature map of the bundle's 192³ volume, batch 1."""
    from monai_contrastive.losses import DiscriminativenessLoss, EquivarianceLoss

    s = _clef_size(sizes)
    f = torch.randn(1, 32, s, s, s, generator=g).to(device).requires_grad_(True)
    f2 = torch.randn(1, 32, s, s, s, generator=g).to(device)
    body = torch.ones(1, 1, s, s, s, dtype=torch.bool, device=device)
    spacing = torch.tensor([[1.8, 1.8, 2.0]], device=device)
    disc, eq = DiscriminativenessLoss(num_anchors=64, num_leaves=2048), EquivarianceLoss()

    def disc_step():
        f.grad = None
        disc(f, body, spacing)[0].backward()

    def eq_step():
        f.grad = None
        eq(f, f2, body.float()).backward()

    res = timed_rounds({"disc": disc_step, "eq": eq_step}, device, warmup, repeats)
    size = f"32 x {s}³, batch 1"
    return [
        {"loss": "DiscriminativenessLoss (CLEF eq. 1, 64 x 2048 voxels)", "size": size, **res["disc"]},
        {"loss": "EquivarianceLoss (CLEF eq. 2)", "size": size, **res["eq"]},
    ]


# ------------------------------------------------------------------------------------------- 4. inference per case
@dataclass
class InferenceSpec:
    """One case through a bundle's inference network and inferer; ``case(sizes)`` is the input tensor."""

    name: str
    bundle: str
    case: Callable
    overrides: Callable = lambda sizes: {}
    modules: tuple[str, ...] = ()
    unit: str = "case"
    extra: dict = field(default_factory=dict)


_PHANTOMS: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}


def _dcc_phantom(sizes: Sizes) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic abdominal CT (``data.synthetic_ct``, 512² in-plane; 32² in a smoke run) scaled to [0, 1] like the
    bundle's preprocessing, ``(1, 1, H, W, D)``, and its organ labels ``(H, W, D)``: the fine stage's work depends on
    the organs the coarse mask holds, so the mask must look like an abdomen, not like a random network's output."""
    if sizes.smoke not in _PHANTOMS:
        import numpy as np

        from monai_contrastive.data.synthetic_ct.rendering import render_case

        case = render_case(np.random.default_rng(0), sizes.pick(512, 32), "portal_venous")
        hu = torch.as_tensor(case["image"].astype("float32")).clamp(-175, 250)
        image = ((hu + 175) / 425)[None, None]
        _PHANTOMS[sizes.smoke] = image, torch.as_tensor(case["label"].astype("int64"))
    return _PHANTOMS[sizes.smoke]


class _PhantomCoarse(torch.nn.Module):
    """The bundle's coarse 3D U-Net (random weights, run for its time and memory) whose class logits are replaced by
    the phantom's own labels, so the organ patches of the fine stage are those of a well-trained coarse stage."""

    def __init__(self, labels: torch.Tensor, sizes: Sizes) -> None:
        super().__init__()
        channels = sizes.pick((16, 32, 64, 128, 256), (4, 8, 16))
        self.unet = monai.networks.nets.UNet(3, 1, 14, channels, [2] * (len(channels) - 1), num_res_units=2)
        self.register_buffer("labels", labels[None, None].float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.unet(x)
        labels = F.interpolate(self.labels, size=tuple(x.shape[2:]), mode="nearest")[:, 0].long()
        return F.one_hot(labels, 14).permute(0, 4, 1, 2, 3).to(out.dtype) * 10.0 + 0.0 * out


INFERENCE: list[InferenceSpec] = [
    InferenceSpec(
        "X-ray (EfficientNet-B1 4-fold ensemble, 128²)",
        "adacon_bmd_xray",
        lambda sizes, g: torch.rand(1, 1, *sizes.pick((128, 128), (32, 32)), generator=g),
        lambda sizes: {"num_folds": 4},
    ),
    InferenceSpec(
        "echo video, all clips (R(2+1)D-18, 175 frames -> 113 clips of 32 x 112²)",
        "adacon_lvef_echo",
        lambda sizes, g: torch.rand(
            1, sizes.pick(113, 3), 3, sizes.pick(32, 4), *sizes.pick((112, 112), (32, 32)), generator=g
        ),
        lambda sizes: {"normalization": [[32.0] * 3, [50.0] * 3], "views_per_batch": sizes.pick(32, 2)},
        modules=("torchvision",),
    ),
    InferenceSpec(
        "CT volume (LRC GlobalLocalUNet, 256² x 53 slices resampled to 200² x 58, patch 256)",
        "lrc_multiorgan_ct",
        lambda sizes, g: torch.rand(1, 1, *sizes.pick((200, 200, 58), (24, 24, 3)), generator=g),
        lambda sizes: {"patch_size": sizes.pick(256, 32)},
    ),
    InferenceSpec(
        "CT volume (CLEF 3D U-Net, whole volume resized to 192³)",
        "clef_ct",
        lambda sizes, g: torch.rand(1, 1, *[_clef_size(sizes)] * 3, generator=g) * 2 - 1,
        _clef_overrides,
        modules=("monai_contrastive.losses.clef",),
    ),
    InferenceSpec(
        "CT volume (DCC-CL: coarse 3D U-Net, organ patches of a 512² phantom through DeepLabV3+, majority vote)",
        "dcc_multiphase_ct",
        lambda sizes, g: _dcc_phantom(sizes)[0],
        lambda sizes: {
            "coarse_network": _PhantomCoarse(_dcc_phantom(sizes)[1], sizes),
            "patch_size": sizes.pick(128, 16),
            "coarse_size": sizes.pick([128, 128, 64], [16, 16, 8]),
        },
        modules=("monai_contrastive.losses.dcc", "segmentation_models_pytorch"),
    ),
]


def bench_inference(spec: InferenceSpec, device: torch.device, sizes: Sizes, warmup: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    parser = parse_config(
        spec.bundle, ["inference.json"], {"device": f"$torch.device('{device}')", **spec.overrides(sizes)}
    )
    net = parser.get_parsed_content("network_def").to(device).eval()  # random weights: timing only
    inferer = parser.get_parsed_content("inferer")
    x = spec.case(sizes, g).to(device)
    amp = device.type == "cuda"

    def run():
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
            inferer(x, net)

    res = timed_rounds({"case": run}, device, warmup, repeats)["case"]
    return {"case": spec.name, "device": device.type, "input_shape": list(x.shape), "amp": amp, **res}


# ------------------------------------------------------------------------------------------------------- report
def machine_info(device: torch.device) -> dict:
    try:
        commit = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), cpu)
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or "unknown",
        "device": str(device),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "load_start": os.getloadavg()[0],
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1))
    else:
        info.update(gpu="none (CPU run)", gpu_memory_gib=None)
    return info


def _f(x: float, scale: float = 1.0, nd: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * scale:.{nd}f}"


def write_report(out_md: str, result: dict) -> str:
    i = result["info"]
    lines = [
        f"# GPU benchmark suite{' (smoke run: tiny sizes, CPU)' if result['smoke'] else ''}",
        "",
        f"- date: {i['date']}; wall time {result['elapsed_s']:.0f} s; commit {i['commit']}",
        f"- command: `{result['command']}`",
        f"- device: {i['device']}; GPU: {i['gpu']}" + (f", {i['gpu_memory_gib']} GiB" if i["gpu_memory_gib"] else ""),
        f"- CPU: {i['cpu']}, {i['nproc']} cores, torch threads {i['torch_threads']}; load average (1 min) at start "
        f"{i['load_start']:.2f}, at end {result['load_end']:.2f}",
        f"- python {i['python']}, torch {i['torch']}, CUDA {i['cuda']}, cuDNN {i['cudnn']} (benchmark mode "
        f"{i['cudnn_benchmark']}), monai {i['monai']}",
        f"- timing: {result['warmup']} warm-up calls, then {result['repeats']} rounds with the cases of a table "
        "interleaved; median and p10-p90; peak memory = `torch.cuda.max_memory_allocated` over the warm-up (n/a on "
        "the CPU)",
        "",
        "## 1. Training step (synthetic tensors on the device)",
        "",
        "The bundle's train config through `monai.bundle.ConfigParser` (network, loss, optimizer, "
        "`train#prepare_batch`) in `MultiViewTrainer`; one step = `_iteration` (views laid out, forward, loss, "
        "backward, optimizer step; "
        "momentum/queue handlers not included). `supervised` = the same backbone trained plainly (`SupervisedTrainer`, "
        "SGD, L1/MSE for regression, MONAI `DiceLoss` for the CT U-Nets) on the same number of images per step.",
        "",
        "| step | precision | `image` of the batch | images/step | median ms | p10-p90 ms | images/s | peak MiB | "
        "supervised ms | supervised peak MiB | x supervised |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["steps"]:
        lines.append(
            f"| {r['step']} | {r['precision']} | {r['input']} | {r['images_per_step']} | {_f(r['median_s'], 1e3)} | "
            f"{_f(r['p10_s'], 1e3)}-{_f(r['p90_s'], 1e3)} | {_f(r['images_per_s'])} | {_f(r['peak_mib'], nd=0)} | "
            f"{_f(r['baseline_median_s'], 1e3)} | {_f(r['baseline_peak_mib'], nd=0)} | {r['ratio_vs_supervised']:.2f} |"
        )
    lines += [f"- skipped: {s}" for s in result["skipped"]["steps"]]
    lines += [
        "",
        "## 2. Data pipeline vs step (bundle's `train#dataloader` on its demo data, the bundle's workers)",
        "",
        "| bundle | config | workers | images/s delivered | images/s the step consumes (fp32) | keeps up | "
        "batches timed |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    step_rate = {r["step"]: r["images_per_s"] for r in result["steps"] if r["precision"] == "fp32"}
    for r in result["pipelines"]:
        need = step_rate.get(r["step"], float("nan"))
        ok = "n/a" if math.isnan(need) else ("yes" if r["images_per_s"] >= need else "no: the step would wait")
        lines.append(
            f"| {r['bundle']} | {r['config']} | {r['num_workers']} | {_f(r['images_per_s'])} | {_f(need)} | {ok} | "
            f"{r['batches']} |"
        )
    lines += [f"- skipped: {s}" for s in result["skipped"]["pipelines"]]
    lines += [
        "",
        "## 3. Contrastive losses at scale (fwd + bwd)",
        "",
        "| loss | size | median ms | p10-p90 ms | peak MiB | x AdaCon |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in result["losses"]:
        lines.append(
            f"| {r['loss']} | {r['size']} | {_f(r['median_s'], 1e3, 2)} | {_f(r['p10_s'], 1e3, 2)}-"
            f"{_f(r['p90_s'], 1e3, 2)} | {_f(r['peak_mib'], nd=0)} | {_f(r.get('ratio_vs_adacon'), nd=2)} |"
        )
    lines += [
        "",
        "## 4. Inference per case (network + inferer of `inference.json`; reading and preprocessing not included)",
        "",
        "| case | device | input | autocast | runs | median s | p10-p90 s | peak MiB |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in result["inference"]:
        lines.append(
            f"| {r['case']} | {r['device']} | {'x'.join(map(str, r['input_shape']))} | {r['amp']} | {r['repeats']} | "
            f"{_f(r['median_s'], nd=3)} | {_f(r['p10_s'], nd=3)}-{_f(r['p90_s'], nd=3)} | {_f(r['peak_mib'], nd=0)} |"
        )
    lines += [f"- skipped: {s}" for s in result["skipped"]["inference"]]
    text = "\n".join(lines) + "\n"
    with open(out_md, "w") as f:
        f.write(text)
    return text


def run_suite(args: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    sizes = Sizes(smoke=args.smoke)
    if args.smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda:0")
        # the bundles leave cudnn.benchmark off; --cudnn-benchmark measures whether it should become a GPU default
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
    else:
        raise SystemExit("gpu_suite: no CUDA device; run with --smoke for the CPU smoke run.")
    warmup, repeats = (1, 3) if args.smoke else (args.warmup, args.repeats)
    if args.smoke:
        torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared CI machine
    info = machine_info(device)
    result = {"info": info, "smoke": args.smoke, "command": args.command, "warmup": warmup, "repeats": repeats}
    skipped: dict[str, list[str]] = {"steps": [], "pipelines": [], "inference": []}
    result["steps"] = []
    for spec in STEPS:
        why = _missing(spec.bundle, spec.modules) or (None if spec.batch else "no step entry for this bundle yet")
        if why:
            skipped["steps"].append(f"{spec.name}: {why}")
            print(f"[step] skipped {spec.name}: {why}", flush=True)
            continue
        result["steps"] += bench_step(spec, device, sizes, warmup, repeats)
    result["pipelines"] = []
    work = args.work_dir or tempfile.mkdtemp(prefix="gpu_suite_")
    try:
        for spec in PIPELINES:
            why = _missing(spec.bundle, spec.modules)
            if why:
                skipped["pipelines"].append(f"{spec.bundle} {spec.files}: {why}")
                continue
            row = bench_pipeline(spec, sizes, work, *(2, 0.5) if args.smoke else (20, 10.0))
            print(f"[data] {spec.bundle} {spec.files}: {row['images_per_s']:.1f} images/s", flush=True)
            result["pipelines"].append(row)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    result["losses"] = bench_losses(device, sizes, warmup, repeats)
    result["inference"] = []
    devices = [device] + ([torch.device("cpu")] if device.type == "cuda" else [])
    for spec in INFERENCE:
        why = _missing(spec.bundle, spec.modules) or (None if spec.case else "no inference entry for this bundle yet")
        if why:
            skipped["inference"].append(f"{spec.name}: {why}")
            continue
        for dev in devices:
            cpu_of_gpu_run = dev.type == "cpu" and device.type == "cuda"
            # the CPU rows of a GPU run: one call each (the echo video's 113 clips alone take minutes on a CPU)
            row = bench_inference(spec, dev, sizes, 0 if cpu_of_gpu_run else warmup, 1 if cpu_of_gpu_run else repeats)
            print(f"[infer] {spec.name} {dev.type}: {row['median_s']:.3f} s", flush=True)
            result["inference"].append(row)
    result["skipped"] = skipped
    result["elapsed_s"] = time.perf_counter() - t_start
    result["load_end"] = os.getloadavg()[0]
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the test runs this)")
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"), help="where gpu_suite[_smoke].{md,json} go")
    p.add_argument("--warmup", type=int, default=3, help="warm-up calls per case (GPU run)")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds per table (GPU run; >= 5)")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True (GPU run)")
    p.add_argument("--work-dir", default="", help="demo data and caches of section 2 (default: a temporary folder)")
    args = p.parse_args(argv)
    args.command = "python benchmarks/gpu_suite.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = run_suite(args)
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, "gpu_suite_smoke" if args.smoke else "gpu_suite")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(write_report(stem + ".md", result))
    return result


if __name__ == "__main__":
    main()

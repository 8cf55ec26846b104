"""
Training-pipeline throughput and inference time of the lrc_multiorgan_ct bundle on its synthetic CT demo data.

Everything is built from the bundle's own configs with ``monai.bundle.ConfigWorkflow`` on a copy of the bundle in a
temporary folder (``train.json + demo.json`` for training, ``inference.json`` for inference), so the configured
transforms, datasets, loaders, inferer and postprocessing are what is measured.

a. Training pipeline, slices per second delivered by ``train#dataloader`` (demo.json: patch 96, batch 2 volumes x
   4 slices, the 10 demo training volumes), for ``num_workers`` 2 (demo.json) and 0:

   - ``cache``: the bundle's ``train#dataset`` as configured, a ``CacheDataset`` of the loaded, resampled, windowed
     and cropped volumes, then ``RandCropByLabelClassesd`` slices per item; the time to fill the cache (building
     the dataset) is reported separately;
   - ``read every time``: the same transforms with ``train#dataset`` replaced by a plain ``monai.data.Dataset``, so
     every item reads and resamples its volume again.

   One warm-up epoch per loader (worker start-up), then whole epochs until at least ``--batches`` batches and
   ``--min-seconds`` seconds; median of ``--repeats`` runs, configurations interleaved.

b. Inference, seconds per volume with ``inference.json`` (``SliceInferer``, ``Invertd``, ``SaveImaged``) on the CPU
   with a randomly initialised network saved as ``models/model.pt`` (plain state dict): the demo data's testing
   volumes (matrix 128) and volumes generated at matrix 256, at each ``--patch-sizes`` value (96: demo.json, as
   ``monai-contrastive infer --demo`` runs it; 256: inference.json's default). Per volume: loading +
   preprocessing (the DataLoader fetch), the network's forward calls (forward hooks), the rest of the
   ``SliceInferer`` (slicing, padding, blending) and the postprocessing (softmax, ``Invertd``, argmax,
   ``SaveImaged``).

Usage::

    python benchmarks/bench_ct_pipeline.py --out benchmarks/results/ct_pipeline.md
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
from copy import deepcopy
from datetime import datetime, timezone

import monai
import nibabel as nib
import numpy as np
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow
from monai.engines.utils import IterationEvents

from monai_contrastive.data.synthetic_ct import generate_ct_demo

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUNDLE = os.path.join(ROOT, "bundles", "lrc_multiorgan_ct")
PLAIN_DATASET = {"_target_": "Dataset", "data": "@train_items", "transform": "@train#preprocessing"}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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


def workflow(root: str, files: list[str], **overrides) -> ConfigWorkflow:
    conf = os.path.join(root, "configs")
    wf = ConfigWorkflow(
        config_file=[os.path.join(conf, f) for f in files],
        meta_file=os.path.join(conf, "metadata.json"),
        logging_file=os.path.join(conf, "logging.conf"),
        workflow_type=None,
        bundle_root=root,
        **overrides,
    )
    wf.initialize()
    return wf


# ----------------------------------------------------------------------------------------------- a. training data


def build_loader(root: str, demo_dir: str, cached: bool, workers: int) -> dict:
    overrides = {"dataset_dir": "", "demo_dir": demo_dir, "num_workers": workers, "train#dataset#progress": False}
    if not cached:
        overrides["train#dataset"] = PLAIN_DATASET
    wf = workflow(root, ["train.json", "demo.json"], **overrides)
    p = wf.parser
    items = p.get_parsed_content("train_items")
    t0 = time.perf_counter()
    dataset = p.get_parsed_content("train#dataset")
    build_s = time.perf_counter() - t0
    loader = p.get_parsed_content("train#dataloader")
    return {
        "name": f"{'cache' if cached else 'read every time'}, num_workers={workers}",
        "cached": cached,
        "workers": workers,
        "loader": loader,
        "dataset": type(dataset).__name__,
        "n_items": len(items),
        "build_s": build_s,
        "batch_size": p.get_parsed_content("batch_size"),
        "slices_per_volume": p.get_parsed_content("slices_per_volume"),
        "patch_size": p.get_parsed_content("patch_size"),
    }


def run_epochs(loader, min_batches: int, min_seconds: float) -> dict:
    """Iterate whole epochs until both minimums are reached; returns batches, slices, seconds."""
    batches = slices = 0
    shape = None
    start = time.perf_counter()
    while batches < min_batches or time.perf_counter() - start < min_seconds:
        for batch in loader:
            slices += batch["image"].shape[0]
            shape = tuple(batch["image"].shape)
            batches += 1
    seconds = time.perf_counter() - start
    return {"batches": batches, "slices": slices, "seconds": seconds, "slices_per_s": slices / seconds, "shape": shape}


def stage_breakdown(root: str, demo_dir: str, repeats: int, threads: int) -> dict:
    """
    Milliseconds per training volume of each transform of ``train#preprocessing`` in this process with ``threads``
    torch threads, as ``(CPU, wall)`` (``time.process_time``, ``time.perf_counter``): the cached part
    (``load_preprocessing``, once per volume) and the per-item part (``CacheDataset``'s copy of the cached item, then
    ``train#slices`` + ``train#squeeze``; ``repeats`` times per volume, mean). Ablation, not in the bundle:
    ``ClassesToIndicesd`` in the cached part and ``RandCropByLabelClassesd`` reading those indices (``indices_key``).
    """
    from monai.transforms import ClassesToIndicesd, RandCropByLabelClassesd

    wf = workflow(root, ["train.json", "demo.json"], dataset_dir="", demo_dir=demo_dir)
    p = wf.parser
    items = p.get_parsed_content("train_items")
    load = p.get_parsed_content("load_preprocessing")
    slices, squeeze = p.get_parsed_content("train#slices"), p.get_parsed_content("train#squeeze")
    to_indices = ClassesToIndicesd("label", num_classes=p.get_parsed_content("num_classes"))
    crop_indexed = RandCropByLabelClassesd(
        ["image", "label"],
        label_key="label",
        spatial_size=slices.cropper.spatial_size,
        num_classes=p.get_parsed_content("num_classes"),
        num_samples=p.get_parsed_content("slices_per_volume"),
        indices_key="label_cls_indices",
        warn=False,
    )
    crop_indexed.set_random_state(0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    totals: dict[str, list[float]] = {}

    def timed(name: str, fn, x, n: int = 1):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn(x)
        tot = totals.setdefault(name, [0.0, 0.0])
        tot[0] += (time.process_time() - c0) / n
        tot[1] += (time.perf_counter() - t0) / n
        return out

    def random_part(d):
        copied = timed("per item: deepcopy", deepcopy, d, repeats)
        for o in timed(f"per item: {type(slices).__name__}", slices, copied, repeats):
            timed(f"per item: {type(squeeze).__name__}", squeeze, o, repeats)

    try:
        for item in items:
            d = dict(item)
            for t in load:
                d = timed(f"cached: {type(t).__name__}", t, d)
            for _ in range(repeats):
                random_part(d)
            d = timed("ablation, cached: ClassesToIndicesd", to_indices, d)
            for _ in range(repeats):
                timed("ablation, per item: RandCropByLabelClassesd(indices_key)", crop_indexed, d, repeats)
    finally:
        torch.set_num_threads(before)
    return {k: (1000 * c / len(items), 1000 * w / len(items)) for k, (c, w) in totals.items()}


# ------------------------------------------------------------------------------------------------- b. inference


def volume_info(path: str) -> dict:
    img = nib.load(path)
    return {
        "shape": tuple(int(s) for s in img.shape),
        "spacing": tuple(round(float(s), 3) for s in img.header.get_zooms()[:3]),
        "axcodes": "".join(nib.aff2axcodes(img.affine)),
    }


def run_inference(root: str, out_dir: str, patch: int, **overrides) -> dict:
    wf = workflow(root, ["inference.json"], output_dir=out_dir, patch_size=patch, **overrides)
    p = wf.parser
    evaluator = p.get_parsed_content("evaluator")
    network = p.get_parsed_content("network")
    files = [x["image"] for x in p.get_parsed_content("inference_items")]
    records: list[dict] = []
    clock: dict[str, float] = {"net": 0.0}

    def pre_hook(module, args):
        clock["net_start"] = time.perf_counter()

    def post_hook(module, args, output):
        clock["net"] += time.perf_counter() - clock["net_start"]

    handles = [network.register_forward_pre_hook(pre_hook), network.register_forward_hook(post_hook)]

    @evaluator.on(Events.GET_BATCH_STARTED)
    def _get_started(engine):
        clock.update(get=time.perf_counter(), net=0.0)

    @evaluator.on(Events.GET_BATCH_COMPLETED)
    def _get_done(engine):
        clock["got"] = time.perf_counter()
        clock["resampled"] = tuple(engine.state.batch["image"].shape[2:])

    @evaluator.on(IterationEvents.FORWARD_COMPLETED)
    def _forward_done(engine):
        clock["fwd"] = time.perf_counter()
        clock["net_total"] = clock["net"]

    @evaluator.on(IterationEvents.MODEL_COMPLETED)  # registered after the bundle's postprocessing: runs after it
    def _post_done(engine):
        now = time.perf_counter()
        records.append(
            {
                "pre_s": clock["got"] - clock["get"],
                "net_s": clock["net_total"],
                "inferer_other_s": clock["fwd"] - clock["got"] - clock["net_total"],
                "post_s": now - clock["fwd"],
                "total_s": now - clock["get"],
                "resampled": clock["resampled"],
            }
        )

    t0 = time.perf_counter()
    wf.run()
    wall = time.perf_counter() - t0
    for h in handles:
        h.remove()
    for f, r in zip(files, records):
        r.update(volume_info(f), file=os.path.basename(f))
        out = os.path.join(
            out_dir, os.path.basename(f).replace(".nii.gz", f"_{p.get_parsed_content('output_postfix')}.nii.gz")
        )
        r["output_ok"] = os.path.isfile(out) and tuple(nib.load(out).shape) == r["shape"]
    return {"wall_s": wall, "records": records, "n": len(files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20, help="minimum timed batches per run")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="minimum timed seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per loader configuration (median)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 0], help="num_workers values (demo.json: 2)")
    parser.add_argument("--patch-sizes", type=int, nargs="+", default=[96], help="inference patch_size values")
    parser.add_argument("--stage-repeats", type=int, default=5, help="random crops per volume in the breakdown")
    parser.add_argument(
        "--inference-threads", type=int, nargs="+", default=None, help="torch threads for inference (default: torch's)"
    )
    parser.add_argument("--reading", default=None, help="a Markdown file appended to the report (the written reading)")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--work-dir", default=None, help="temporary folder (default: a new one, removed at the end)")
    parser.add_argument("--out", default=None, help="write the Markdown report here (else print it)")
    args = parser.parse_args()
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])

    work = args.work_dir or tempfile.mkdtemp(prefix="bench_ct_pipeline_")
    root = os.path.join(work, "lrc_multiorgan_ct")
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "runs", "demo_data"))
    demo_dir = os.path.join(work, "demo_data")
    t0 = time.perf_counter()
    generate_ct_demo(demo_dir)  # the bundle's default demo data (what resolve_datalist generates without overrides)
    gen_s = time.perf_counter() - t0

    load_before = os.getloadavg()
    busy0, own0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    torch_threads = torch.get_num_threads()

    # a. training pipeline ---------------------------------------------------------------------------------------
    configs: list[dict] = []
    stages: dict[int, dict] = {}
    if not args.skip_training:
        for cached in (True, False):
            for w in args.workers:
                cfg = build_loader(root, demo_dir, cached, w)
                warm = run_epochs(cfg["loader"], 1, 0.0)  # one epoch: worker start-up, page cache
                cfg["warmup_s"] = warm["seconds"]
                cfg["runs"] = []
                configs.append(cfg)
                print(f"{cfg['name']}: dataset built in {cfg['build_s']:.2f} s, warm-up epoch {warm['seconds']:.2f} s")
        for r in range(args.repeats):
            for cfg in configs:
                res = run_epochs(cfg["loader"], args.batches, args.min_seconds)
                cfg["runs"].append(res)
                print(
                    f"run {r} {cfg['name']}: {res['slices_per_s']:.1f} slices/s ({res['batches']} batches)", flush=True
                )
        for cfg in configs:
            del cfg["loader"]  # shuts persistent workers down before the inference timings
        stages = {t: stage_breakdown(root, demo_dir, args.stage_repeats, t) for t in sorted({1, torch_threads})}

    # b. inference ------------------------------------------------------------------------------------------------
    inference: list[dict] = []
    if not args.skip_inference:
        wf = workflow(root, ["inference.json"], dataset_dir="", demo_dir=demo_dir)
        torch.manual_seed(0)
        net = wf.parser.get_parsed_content("network_def")
        os.makedirs(os.path.join(root, "models"), exist_ok=True)
        torch.save(net.state_dict(), os.path.join(root, "models", "model.pt"))
        n_params = sum(p.numel() for p in net.parameters())
        big = generate_ct_demo(
            os.path.join(work, "demo_256"), matrix=256, num_labelled=3, num_unlabelled=0, num_validation=1, num_test=1
        )
        input_256 = os.path.join(work, "input_256")
        os.makedirs(input_256, exist_ok=True)
        for sub in ("imagesTr", "imagesTs"):
            for f in sorted(os.listdir(os.path.join(os.path.dirname(big), sub))):
                shutil.copy(os.path.join(os.path.dirname(big), sub, f), input_256)
        sources = [
            ("demo testing volumes (matrix 128)", {"dataset_dir": "", "demo_dir": demo_dir}),
            ("generated at matrix 256", {"input_dir": input_256}),
        ]
        for threads in args.inference_threads or [torch_threads]:
            torch.set_num_threads(threads)
            for patch in args.patch_sizes:
                for label, over in sources:
                    out_dir = os.path.join(work, "predictions", f"{len(inference)}")
                    res = run_inference(root, out_dir, patch, **over)
                    res.update(source=label, patch=patch, threads=threads)
                    inference.append(res)
                    print(
                        f"inference {label}, patch {patch}, {threads} torch thread(s): "
                        f"{res['wall_s'] / res['n']:.2f} s/volume ({res['n']} volumes)",
                        flush=True,
                    )
        torch.set_num_threads(torch_threads)

    wall = time.perf_counter() - wall0
    others = (busy_cpu_seconds() - busy0) - (own_cpu_seconds() - own0)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)

    # report --------------------------------------------------------------------------------------------------------
    nproc = len(os.sched_getaffinity(0))
    lines = [
        "# lrc_multiorgan_ct: training-pipeline throughput and inference time (CPU)",
        "",
        "Built from the bundle's configs with `monai.bundle.ConfigWorkflow` on a copy of the bundle in a temporary",
        "folder (`benchmarks/bench_ct_pipeline.py`; its docstring describes the method).",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: `nproc` = {nproc}, CPU model `{cpu_model()}` (from /proc/cpuinfo), "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, no GPU used; torch "
        f"threads {torch_threads}",
        f"- other load: 1-min load average {load_before[0]:.2f} before the runs; during the {wall:.0f} s of runs "
        f"other processes used {max(others, 0.0):.0f} CPU-seconds, i.e. {max(others, 0.0) / wall:.2f} of the "
        f"{nproc} cores on average (busy time from /proc/stat minus this benchmark's own)",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}, "
        f"nibabel {nib.__version__}, numpy {np.__version__}",
        f"- command: `{command}`",
        f"- data: the bundle's default demo data (`generate_ct_demo` defaults: seed 0, matrix 128; generated in "
        f"{gen_s:.1f} s)",
    ]
    if configs:
        c0 = configs[0]
        per_batch = c0["batch_size"] * c0["slices_per_volume"]

        def med(cfg: dict, key: str) -> float:
            return statistics.median(r[key] for r in cfg["runs"])

        lines += [
            "",
            "## a. Training pipeline (`train#dataset` / `train#dataloader`, train.json + demo.json)",
            "",
            f"{c0['n_items']} training volumes (demo.json `num_train_volumes`), batch {c0['batch_size']} volumes x "
            f"{c0['slices_per_volume']} slices = {per_batch} slices of {c0['patch_size']}x{c0['patch_size']} "
            f"(batch `image` {c0['runs'][0]['shape']}). `cache` = the bundle's `CacheDataset`; `read every time` = "
            "`train#dataset` overridden with a plain `monai.data.Dataset` over the same transforms (load, "
            "`ValidateCTd`, orientation, `Spacingd` to 1 x 1 x 2.5 mm, window, foreground crop, pad, then "
            "`RandCropByLabelClassesd` + `SqueezeDimd`). Each run: whole epochs until at least "
            f"{args.batches} batches and {args.min_seconds:g} s, after one warm-up epoch; median of {args.repeats} "
            "runs, configurations interleaved. No training step: this is the rate the loader can feed.",
            "",
            "| configuration | dataset | slices/s | batches/s | timed batches | timed s | dataset build (s) | "
            "warm-up epoch (s) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for cfg in configs:
            lines.append(
                f"| {cfg['name']} | `{cfg['dataset']}` | {med(cfg, 'slices_per_s'):.1f} | "
                f"{med(cfg, 'slices_per_s') / per_batch:.2f} | {med(cfg, 'batches'):.0f} | {med(cfg, 'seconds'):.2f} | "
                f"{cfg['build_s']:.2f} | {cfg['warmup_s']:.2f} |"
            )
        lines += ["", "Speed-up of the cache over reading every time (median slices/s):", ""]
        for w in args.workers:
            c = next(x for x in configs if x["cached"] and x["workers"] == w)
            p = next(x for x in configs if not x["cached"] and x["workers"] == w)
            lines.append(
                f"- num_workers={w}: **{med(c, 'slices_per_s') / med(p, 'slices_per_s'):.1f}x** "
                f"({med(c, 'slices_per_s'):.1f} vs {med(p, 'slices_per_s'):.1f} slices/s); cache fill "
                f"{c['build_s']:.2f} s for {c['n_items']} volumes ({1000 * c['build_s'] / c['n_items']:.0f} ms per "
                f"volume, CacheDataset with {max(w, 1)} thread(s))"
            )
        lines += [
            "",
            "All runs (slices/s): "
            + "; ".join(f"{c['name']}: " + ", ".join(f"{r['slices_per_s']:.1f}" for r in c["runs"]) for c in configs),
            "",
            "Cost per training volume by transform (ms; one process, no DataLoader, after `ConfigWorkflow` built the "
            "transforms; CPU = `time.process_time` summed over threads, wall = `time.perf_counter`; `per item` = one "
            f"pass of what `CacheDataset` runs per item: copy of the cached volume, then the random part giving "
            f"{c0['slices_per_volume']} slices, mean over {args.stage_repeats} passes per volume; the `ablation` rows "
            "are not in the bundle: class indices computed once into the cache by `ClassesToIndicesd` and read by "
            "`RandCropByLabelClassesd(indices_key=...)`):",
            "",
            "| stage | " + " | ".join(f"CPU, {t} thread(s) | wall, {t} thread(s)" for t in stages) + " |",
            "|---|" + "---:|---:|" * len(stages),
        ]
        names = list(dict.fromkeys(k for v in stages.values() for k in v))
        for name in names:
            lines.append(
                f"| {name} | " + " | ".join(f"{v[name][0]:.1f} | {v[name][1]:.1f}" for v in stages.values()) + " |"
            )
        for part in ("cached", "per item"):
            lines.append(
                f"| total {part} | "
                + " | ".join(
                    f"{sum(x[0] for k, x in v.items() if k.startswith(part)):.1f} | "
                    f"{sum(x[1] for k, x in v.items() if k.startswith(part)):.1f}"
                    for v in stages.values()
                )
                + " |"
            )
    if inference:
        lines += [
            "",
            "## b. Inference (`inference.json`: `SliceInferer` overlap 0.25, sw_batch_size 8, softmax, `Invertd`, "
            "argmax, `SaveImaged`)",
            "",
            f"Randomly initialised `GlobalLocalUNet` ({n_params / 1e6:.2f} M parameters, `torch.manual_seed(0)`) "
            "saved as `models/model.pt` (plain state dict), loaded by the config's `CheckpointLoader`; CPU, fp32, "
            "DataLoader num_workers 0 (as configured). Matrix-256 volumes: `generate_ct_demo(..., matrix=256, "
            "num_labelled=3, num_unlabelled=0, num_validation=1, num_test=1)`, all 3 images copied into one folder "
            "passed as `input_dir`. Times per volume: `pre` = loading + preprocessing (the DataLoader fetch), `net` "
            "= the network's forward calls, `inferer` = the rest of `SliceInferer` (slicing, padding, blending), "
            "`post` = softmax + `Invertd` + argmax + `SaveImaged`. Every output has the input's shape "
            "(checked).",
            "",
            "| volumes | patch | torch threads | volumes run | s/volume (run wall / n) | pre | net | inferer | post | "
            "net share |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for res in inference:
            rs = res["records"]
            tot = sum(r["total_s"] for r in rs)
            parts = {k: sum(r[k] for r in rs) for k in ("pre_s", "net_s", "inferer_other_s", "post_s")}
            lines.append(
                f"| {res['source']} | {res['patch']} | {res['threads']} | {res['n']} | "
                f"{res['wall_s'] / res['n']:.2f} | "
                + " | ".join(f"{parts[k] / len(rs):.2f}" for k in parts)
                + f" | {100 * parts['net_s'] / tot:.0f} % |"
            )
        lines += [
            "",
            "Per volume (seconds; shape and spacing of the stored array, resampled = the network's input grid):",
            "",
            "| volumes | patch | threads | file | orientation | shape | spacing (mm) | resampled | pre | net | "
            "inferer | post | total | output ok |",
            "|---|---:|---:|---|---|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for res in inference:
            for r in res["records"]:
                lines.append(
                    f"| {res['source']} | {res['patch']} | {res['threads']} | {r['file']} | {r['axcodes']} | "
                    f"{'x'.join(map(str, r['shape']))} | {' x '.join(f'{s:g}' for s in r['spacing'])} | "
                    f"{'x'.join(map(str, r['resampled']))} | {r['pre_s']:.2f} | {r['net_s']:.2f} | "
                    f"{r['inferer_other_s']:.2f} | {r['post_s']:.2f} | {r['total_s']:.2f} | {r['output_ok']} |"
                )
    if args.reading and os.path.isfile(args.reading):
        with open(args.reading) as f:
            lines += ["", f.read().rstrip()]
    report = "\n".join(lines) + "\n"
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(report)
        print(f"written {args.out}")
    print(report)


if __name__ == "__main__":
    main()

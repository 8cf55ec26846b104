"""Training throughput of the LVEF bundle's model: clips per second through one full training step.

The network, loss and optimizer come from ``bundles/adacon_lvef_echo/configs/train.json`` (R(2+1)D-18 with the
regression and projection heads, MSE + AdaCon, SGD); the step is ``MultiViewTrainer``'s (two views per video,
flattened, one forward/backward). Input batches are random uint8 clips already in memory, so the number measures
the model alone, not the data pipeline (see ``bench_echo_data.py`` for that). On CUDA, AMP is on as in the bundle.

    python benchmarks/bench_adacon_lvef_speed.py --out benchmarks/results/adacon_lvef_speed.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone

import monai
import torch
from monai.bundle import ConfigParser

from monai_contrastive.engines import MultiViewTrainer, PrepareViewBatch

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLE = os.path.join(os.path.dirname(HERE), "bundles", "adacon_lvef_echo")


def build(device: torch.device, amp: bool, gamma_con: float):
    parser = ConfigParser()
    parser.read_config(os.path.join(BUNDLE, "configs", "train.json"))
    stats = os.path.join(tempfile.mkdtemp(), "normalization.json")
    with open(stats, "w") as f:
        json.dump({"mean": [32.0, 32.0, 32.0], "std": [50.0, 50.0, 50.0]}, f)
    labels = [float(v) for v in torch.linspace(20, 80, 101)]
    parser.update(
        {
            "train_items": [{"image": "", "label": v} for v in labels],
            "normalization_file": stats,
            "device": device,
            "amp": amp,
            "gamma_con": gamma_con,
        }
    )
    parser.parse()
    return (
        parser.get_parsed_content("network"),
        parser.get_parsed_content("loss"),
        parser.get_parsed_content("optimizer"),
    )


def measure(device, amp, batch, views, length, size, iters, warmup, gamma_con) -> dict:
    net, loss, opt = build(device, amp, gamma_con)
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "image": torch.randint(0, 256, (batch, views, 3, length, size, size), dtype=torch.uint8, generator=g),
            "label": torch.rand(batch, generator=g) * 60 + 20,
        }
        for _ in range(2)
    ]
    data = [batches[i % 2] for i in range(iters + warmup)]
    trainer = MultiViewTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=opt,
        loss_function=loss,
        amp=amp,
        prepare_batch=PrepareViewBatch(stacked_keys=["image"], sample_keys=["label"]),
        label_key="label",
    )
    times: list[float] = []

    def _start(_):
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())

    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_STARTED, _start)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    timed = end - times[warmup]
    clips = batch * views * iters
    return {
        "clips_per_s": clips / timed,
        "s_per_step": timed / iters,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        settings = [("paper: 20 videos x 2 clips, 32 x 112 x 112", 20, 2, 32, 112, 20, 3)]
    else:
        settings = [
            ("paper clip size, 2 videos x 2 clips, 32 x 112 x 112", 2, 2, 32, 112, 2, 1),
            ("demo.json: 10 videos x 2 clips, 8 x 28 x 28", 10, 2, 8, 28, 10, 2),
        ]
    rows = []
    for name, b, v, t, s, iters, warm in settings:
        for gamma, label in ((0.75, "MSE + AdaCon"), (0.0, "MSE only")):
            r = measure(device, amp, b, v, t, s, iters, warm, gamma)
            rows.append((name, label, r))
            print(name, label, r, flush=True)
    dev = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {args.threads} threads"
    lines = [
        f"# LVEF bundle: training throughput ({dev})",
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; device: {dev}; AMP: {amp}",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__}, monai {monai.__version__}",
        f"- command: `python {' '.join([os.path.relpath(sys.argv[0])] + sys.argv[1:])}`",
        "",
        "| input | loss | training clips/s | s/step | peak GPU memory (GiB) |",
        "|---|---|---:|---:|---:|",
    ]
    for name, label, r in rows:
        lines.append(f"| {name} | {label} | {r['clips_per_s']:.2f} | {r['s_per_step']:.3f} | {r['peak_gib']:.1f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()

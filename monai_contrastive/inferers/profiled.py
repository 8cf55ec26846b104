"""An inferer wrapper that measures what FLARE's efficiency measures look at: seconds per case and peak memory."""

from __future__ import annotations

import os
import platform
import resource
import time
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer

from monai_contrastive.io import atomic_write, atomic_write_json

__all__ = ["ProfiledInferer", "peak_rss_mib"]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports ``ru_maxrss`` in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 / (1024.0 if platform.system() == "Darwin" else 1.0)


class ProfiledInferer(Inferer):
    """Run ``inferer`` and record, per call (one case), the wall-clock seconds (CUDA synchronised) and the peak GPU
    memory allocated during the call; :meth:`report` adds the process's peak RSS, :meth:`write` saves them.

    Args:
        inferer: the inferer doing the work (``SimpleInferer``, ``SlidingWindowInferer``...).
    """

    def __init__(self, inferer: Inferer) -> None:
        super().__init__()
        self.inferer = inferer
        self.seconds: list[float] = []
        self.peak_gpu_mib: list[float] = []

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        cuda = inputs.is_cuda
        if cuda:
            torch.cuda.synchronize(inputs.device)
            torch.cuda.reset_peak_memory_stats(inputs.device)
        start = time.perf_counter()
        out = self.inferer(inputs, network, *args, **kwargs)
        if cuda:
            torch.cuda.synchronize(inputs.device)
            self.peak_gpu_mib.append(torch.cuda.max_memory_allocated(inputs.device) / 2**20)
        self.seconds.append(time.perf_counter() - start)
        return out

    def report(self) -> dict:
        """``{"cases", "seconds_per_case": {median, mean, min, max}, "peak_gpu_mib", "peak_rss_mib", "device"}``."""
        s = np.asarray(self.seconds, dtype=float)
        summary = (
            {"median": float(np.median(s)), "mean": float(s.mean()), "min": float(s.min()), "max": float(s.max())}
            if s.size
            else {}
        )
        return {
            "cases": int(s.size),
            "seconds_per_case": summary,
            "peak_gpu_mib": max(self.peak_gpu_mib) if self.peak_gpu_mib else None,
            "peak_rss_mib": peak_rss_mib(),
            "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if self.peak_gpu_mib else platform.processor() or "cpu",
        }

    def write(self, output_dir: str, name: str = "efficiency") -> dict:
        """Write ``<name>.json`` and ``<name>.md`` to ``output_dir``; return the report."""
        rep = self.report()
        os.makedirs(output_dir, exist_ok=True)
        atomic_write_json(rep, os.path.join(output_dir, f"{name}.json"))
        sec = rep["seconds_per_case"]
        gpu = f"{rep['peak_gpu_mib']:.0f} MiB" if rep["peak_gpu_mib"] is not None else "n/a (CPU)"
        lines = [
            "| cases | s/case median | s/case min-max | peak GPU memory | peak RSS (process) | threads |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {rep['cases']} | {sec.get('median', float('nan')):.3f} | {sec.get('min', float('nan')):.3f}-"
            f"{sec.get('max', float('nan')):.3f} | {gpu} | {rep['peak_rss_mib']:.0f} MiB | {rep['threads']} |",
            "",
            "Seconds: the network forward per case (no preprocessing or inversion); peak RSS: the whole process.",
        ]
        atomic_write(os.path.join(output_dir, f"{name}.md"), lambda f: f.write("\n".join(lines) + "\n"))
        print(
            f"efficiency: {sec.get('median', float('nan')):.3f} s/case (median), peak GPU {gpu}, "
            f"peak RSS {rep['peak_rss_mib']:.0f} MiB",
            flush=True,
        )
        return rep

"""Speed of the AdaCon loss and of an AdaCon training step (Dai et al., IEEE TMI; BMD setting of §IV).

(a) Loss forward + backward for N = 64 ... 4096 views (D = 128, unit embeddings, 8 views per sample, float32) on
    the CPU (and on CUDA when available), the cases of one N interleaved round by round after a warm-up, median and
    p10-p90 of the times and of the per-round ratios to AdaCon, against:
    - pytorch-metric-learning's ``SupConLoss`` (temperature 1 / s, classes = sample ids) as the peer;
    - eq. 6 as plain vectorised autograd code (the best plain implementation, and this package's before the
      hand-written backward);
    - this package's ``SupConLoss`` (AdaCon with the margin off) to show the cost of the adaptive margin;
    - a naive Python double loop over (anchor, other) pairs of eq. 6 (N = 64 only, to show the vectorisation).
(b) A full training step of EfficientNet-B1 (128 x 128, 1 channel, 8 samples x 8 views = 64 images, SGD) through
    ``MultiViewTrainer`` and ``MultiTaskRegressionLoss``: regression only (no contrastive loss) vs regression + AdaCon
    (gamma_con = 0.005) on the same views, interleaved round by round so that machine load drifts hit both equally.
    The contrastive branch's share of the step is measured two ways: the difference of the median step times, and
    a direct timing of the extra work (ECDF, AdaCon forward/backward, projection-head backward and its SGD update).

Usage::

    python benchmarks/bench_adacon_speed.py                 # writes benchmarks/results/adacon_speed.{md,json}
    python benchmarks/bench_adacon_speed.py --skip-train    # (a) only; keeps the file's section (b)
    python benchmarks/bench_adacon_speed.py --steps 5 --repeats 30 --out /tmp/adacon_speed.md

About 1.5 min on 2 idle cores with the defaults (a training step of 64 images takes ~3 s there); a loaded machine
can be 5x slower, so lower ``--steps`` there.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import monai  # noqa: E402
from monai.networks.nets import EfficientNetBN  # noqa: E402

from monai_contrastive.engines import MultiViewTrainer, PrepareViewBatch  # noqa: E402
from monai_contrastive.losses import ECDF, AdaptiveMarginContrastiveLoss, MultiTaskRegressionLoss, SupConLoss  # noqa
from monai_contrastive.networks import RegressionContrastiveNet  # noqa: E402

VIEWS = 8
CLEAN_LOAD = 0.25  # a training round counts as undisturbed when other processes used less CPU than this (cores)
DIM = 128
SCALE = 150.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class OtherLoad:
    """CPU used by other processes (in cores) while a block runs: machine-wide busy time minus this process's.

    Reads ``/proc/stat`` and ``/proc/self/stat`` (Linux); ``value`` is NaN elsewhere. On a shared machine this tells
    which timings were disturbed by other jobs.
    """

    def __init__(self) -> None:
        self.value = float("nan")

    @staticmethod
    def _snapshot() -> tuple[float, float]:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0.0)  # minus idle and iowait
        with open("/proc/self/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
        own = float(stat[11]) + float(stat[12])  # utime + stime of all threads
        return busy, own

    def __enter__(self) -> OtherLoad:
        try:
            self._t0, (self._busy0, self._own0) = time.perf_counter(), self._snapshot()
        except (OSError, ValueError, IndexError):
            self._t0 = None
        return self

    def __exit__(self, *exc) -> None:
        if self._t0 is None:
            return
        busy, own = self._snapshot()
        ticks = os.sysconf("SC_CLK_TCK") * (time.perf_counter() - self._t0)
        self.value = max(0.0, ((busy - self._busy0) - (own - self._own0)) / ticks)


def time_fn(fn: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Wall times (ms) of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def make_loss_inputs(n: int, device: torch.device, seed: int = 0):
    """Unit embeddings (N, D), ECDF values, sample ids and labels of N / 8 samples x 8 views."""
    g = torch.Generator().manual_seed(seed)
    samples = n // VIEWS
    sample_labels = 0.6 + 0.8 * torch.rand(samples, generator=g)
    ecdf = ECDF(0.6 + 0.8 * torch.rand(1000, generator=g))
    labels = sample_labels.repeat_interleave(VIEWS)
    ids = torch.arange(samples).repeat_interleave(VIEWS)
    z = F.normalize(torch.randn(n, DIM, generator=g), dim=1)
    return z.to(device), ecdf(labels).to(device), ids.to(device), labels.to(device)


def naive_adacon(z: torch.Tensor, phi: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor, s: float = SCALE):
    """Eq. 6 with the margin of eq. 4 as a Python double loop over (anchor i, other a), scalar torch ops.

    The denominator is a log-sum-exp (``exp(150 * 3)`` overflows float32), so it computes the same value as the
    vectorised loss; only the loop structure differs.
    """
    n = z.shape[0]
    ids_l, y_l, phi_l = ids.tolist(), labels.tolist(), phi.tolist()
    per_anchor = []
    for i in range(n):
        den, pos = [], []
        for a in range(n):
            if a == i:
                continue
            c = torch.dot(z[i], z[a])
            positive = ids_l[a] == ids_l[i] or y_l[a] == y_l[i]
            margin = 0.0 if positive else 2.0 * abs(phi_l[i] - phi_l[a])
            den.append(s * (c + margin))
            if positive:
                pos.append(s * c)
        if pos:
            log_den = torch.logsumexp(torch.stack(den), dim=0)
            per_anchor.append(-(torch.stack(pos) - log_den).mean())
    return torch.stack(per_anchor).mean()


def plain_autograd_adacon(
    z: torch.Tensor, phi: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor, s: float = SCALE
):
    """Eq. 6 as the best plain vectorised autograd code (bool masks, ``torch.logsumexp``), the package's
    implementation before its backward was written by hand: the baseline a user would write."""
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = ((labels[:, None] == labels[None, :]) | (ids[:, None] == ids[None, :])) & ~eye
    cos = z @ z.t()
    logits = s * cos + s * 2.0 * (phi[:, None] - phi[None, :]).abs().masked_fill(pos, 0.0)
    log_denom = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)
    log_prob = s * cos - log_denom[:, None]
    n_pos = pos.sum(1)
    per_anchor = -torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1) / n_pos.clamp(min=1)
    return per_anchor[n_pos > 0].mean()


OURS = "AdaCon (this package)"
PEER = "SupConLoss (pytorch-metric-learning)"


def bench_losses(
    device: torch.device, sizes: list[int], repeats: int, warmup: int, naive_repeats: int, max_seconds: float
) -> list[dict]:
    """Loss forward + backward per N; the cases of one N run interleaved (one call of each per round, the order
    rotating), so a change of machine load hits all alike; per-round ratios to AdaCon are paired."""
    try:
        from pytorch_metric_learning.losses import SupConLoss as PMLSupConLoss
    except ImportError:  # pragma: no cover
        PMLSupConLoss = None
    adacon = AdaptiveMarginContrastiveLoss(scale=SCALE)
    supcon = SupConLoss(scale=SCALE)
    rows = []
    for n in sizes:
        z0, phi, ids, labels = make_loss_inputs(n, device)
        z = z0.clone().requires_grad_(True)

        def run(loss_fn):
            def _f():
                z.grad = None
                loss_fn().backward()

            return _f

        cases = {
            OURS: run(lambda: adacon(z, phi, ids, labels)),
            "SupCon (this package, margin off)": run(lambda: supcon(z, phi, ids, labels)),
            "AdaCon, plain vectorised autograd": run(lambda: plain_autograd_adacon(z, phi, ids, labels)),
        }
        if PMLSupConLoss is not None:
            pml = PMLSupConLoss(temperature=1.0 / SCALE)
            cases[PEER] = run(lambda: pml(z, ids))
        ref = float(adacon(z0, phi, ids, labels))
        plain = float(plain_autograd_adacon(z0, phi, ids, labels))
        assert abs(ref - plain) <= 1e-4 * max(1.0, abs(ref)), f"plain autograd {plain} != ours {ref}"
        names = list(cases)
        for _ in range(warmup):
            for name in names:
                cases[name]()
        _sync(device)
        times: dict[str, list[float]] = {name: [] for name in names}
        loads: list[float] = []
        t_start = time.perf_counter()
        r = 0
        while r < repeats and (r < 5 or time.perf_counter() - t_start < max_seconds):
            order = names[r % len(names) :] + names[: r % len(names)]
            with OtherLoad() as other:
                for name in order:
                    times[name] += time_fn(cases[name], device, 1, 0)
            loads.append(other.value)
            r += 1
        for name in names:
            ratios = [t / o for t, o in zip(times[name], times[OURS])]
            rows.append(_row(device, n, name, times[name], loads, ratios))
            print(
                f"[loss] {device.type} N={n:5d} {name:40s} median {rows[-1]['median']:9.3f} ms, "
                f"x{rows[-1]['ratio_median']:.2f} of AdaCon",
                flush=True,
            )
        if n <= 64 and device.type == "cpu":
            got = float(naive_adacon(z0, phi, ids, labels))
            assert abs(ref - got) <= 1e-4 * max(1.0, abs(ref)), f"naive loop {got} != vectorised {ref}"
            with OtherLoad() as other:
                t_naive = time_fn(run(lambda: naive_adacon(z, phi, ids, labels)), device, naive_repeats, 2)
            ours_med = statistics.median(times[OURS])
            rows.append(
                _row(
                    device,
                    n,
                    "AdaCon, naive Python double loop",
                    t_naive,
                    [other.value],
                    [t / ours_med for t in t_naive],
                )
            )
    return rows


def _row(device, n, name, times, loads, ratios) -> dict:
    return {
        "device": device.type,
        "n": n,
        "name": name,
        "median": statistics.median(times),
        "min": min(times),
        "p10": _quantile(times, 0.1),
        "p90": _quantile(times, 0.9),
        "repeats": len(times),
        "ratio_median": statistics.median(ratios),
        "ratio_p10": _quantile(ratios, 0.1),
        "ratio_p90": _quantile(ratios, 0.9),
        "other_load": statistics.median(loads),
        "times_ms": times,
    }


def _quantile(values: list[float], q: float) -> float:
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def bench_train_step(
    steps: int, warmup: int, batch: int, views: int, size: int, max_seconds: float = float("inf"), min_steps: int = 5
) -> dict:
    """Interleaved full MultiViewTrainer iterations: regression only vs regression + AdaCon, equal views.

    Timed rounds stop early, after at least ``min_steps``, once the rounds have taken ``max_seconds``.
    """
    torch.manual_seed(0)
    device = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    train_labels = 0.6 + 0.8 * torch.rand(500, generator=g)
    ecdf = ECDF(train_labels)
    backbone = EfficientNetBN("efficientnet-b1", spatial_dims=2, in_channels=1, num_classes=1, pretrained=False)
    net0 = RegressionContrastiveNet(backbone, feature_dim=1280, reg_bias_init=float(train_labels.mean()))
    configs = {
        "regression only (L1)": MultiTaskRegressionLoss(regression="l1", contrastive=None, gamma_con=0.0),
        "regression + AdaCon (gamma_con=0.005)": MultiTaskRegressionLoss(
            regression="l1", contrastive=AdaptiveMarginContrastiveLoss(scale=SCALE), ecdf=ecdf, gamma_con=0.005
        ),
    }
    trainers = {}
    for name, loss in configs.items():
        net = copy.deepcopy(net0)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        trainers[name] = MultiViewTrainer(
            device=device,
            max_epochs=1,
            epoch_length=1,
            train_data_loader=[None],
            network=net,
            optimizer=opt,
            loss_function=loss,
            amp=False,
            prepare_batch=PrepareViewBatch(stacked_keys=["image"], sample_keys=["label"]),
        )
    images = torch.rand(batch, views, 1, size, size, generator=g)
    batch_data = {"image": images, "label": 0.6 + 0.8 * torch.rand(batch, generator=g)}
    times: dict[str, list[float]] = {name: [] for name in trainers}
    loads: dict[str, list[float]] = {name: [] for name in trainers}
    names = list(trainers)
    t_start = time.perf_counter()
    r = 0
    while r < warmup + steps:
        if r >= warmup + min_steps and time.perf_counter() - t_start > max_seconds:
            print(
                f"[step] time budget of {max_seconds:.0f} s used: stopping after {r - warmup} timed rounds", flush=True
            )
            break
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            tr = trainers[name]
            with OtherLoad() as other:
                t0 = time.perf_counter()
                out = tr._iteration(tr, batch_data)  # the trainer's step: flatten, forward, loss, backward, step
                dt = time.perf_counter() - t0
            if not torch.isfinite(out["loss"]):
                raise RuntimeError(f"{name}: non-finite loss at round {r}")
            tag = "warm-up" if r < warmup else "timed"
            print(f"[step] round {r} ({tag}) {name:40s} {dt:7.2f} s, other load {other.value:.2f} cores", flush=True)
            if r >= warmup:
                times[name].append(dt)
                loads[name].append(other.value)
        r += 1
    # direct timing of the extra work of the contrastive branch on the features of one step (N = 64)
    n = batch * views
    head = copy.deepcopy(trainers[names[1]].network.heads["embedding"])
    head_opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    feats = torch.randn(n, 1280, generator=g).relu().requires_grad_(True)
    y = batch_data["label"].repeat_interleave(views)
    ids = torch.arange(batch).repeat_interleave(views)
    adacon = AdaptiveMarginContrastiveLoss(scale=SCALE)

    def proj_forward_only():
        head(feats)  # paid by both configurations: RegressionContrastiveNet always computes the embedding

    def branch():
        head_opt.zero_grad(set_to_none=True)
        feats.grad = None
        emb = head(feats)
        (0.005 * adacon(emb, ecdf(y), ids, y)).backward()
        head_opt.step()

    # paired: each repetition times the projection forward alone and the whole branch back to back
    proj_t, branch_t = [], []
    direct_load = OtherLoad()
    with direct_load:
        for k in range(35):
            a = time_fn(proj_forward_only, device, 1, 0)[0]
            b = time_fn(branch, device, 1, 0)[0]
            if k >= 5:
                proj_t.append(a)
                branch_t.append(b)
    z0, phi, ids64, lab64 = make_loss_inputs(n, device)
    zl = z0.clone().requires_grad_(True)

    def loss_only():
        zl.grad = None
        adacon(zl, phi, ids64, lab64).backward()

    with OtherLoad() as loss_load:
        loss_t = time_fn(loss_only, device, 30, 5)
    t_loss, t_loss_min = statistics.median(loss_t), min(loss_t)
    reg, con = (times[k] for k in names)
    paired = [c - r for r, c in zip(reg, con)]
    clean = [k for k in range(len(reg)) if all(loads[name][k] < CLEAN_LOAD for name in names)]
    return {
        "loads": loads,
        "clean_rounds": clean,
        "clean_median": {k: statistics.median([v[i] for i in clean]) for k, v in times.items()} if clean else None,
        "clean_paired_diff_median": statistics.median([paired[i] for i in clean]) if clean else None,
        "direct_load": direct_load.value,
        "loss_load": loss_load.value,
        "names": names,
        "times": times,
        "median": {k: statistics.median(v) for k, v in times.items()},
        "min": {k: min(v) for k, v in times.items()},
        "max": {k: max(v) for k, v in times.items()},
        "paired_diff_median": statistics.median(paired),
        "paired_diff_min": min(paired),
        "paired_diff_max": max(paired),
        "t_proj_ms": statistics.median(proj_t),
        "t_branch_ms": statistics.median([b - a for a, b in zip(proj_t, branch_t)]),
        "t_branch_min_ms": min(branch_t) - min(proj_t),
        "t_loss_ms": t_loss,
        "t_loss_min_ms": t_loss_min,
        "images_per_step": n,
        "steps": len(reg),
        "warmup": warmup,
    }


def machine_info() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (torch.cuda.is_available() is False)"
    try:
        pml_version = __import__("pytorch_metric_learning").__version__
    except ImportError:
        pml_version = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "pml": pml_version,
        "threads": torch.get_num_threads(),
        "commit": commit or "unknown",
    }


def write_markdown(path: str, info: dict, command: str, loss_rows: list[dict], train: dict | None, meta: dict) -> str:
    lines = [
        "# AdaCon speed benchmark",
        "",
        f"- date: {meta['date']} (wall time of the whole run: {meta['elapsed']:.0f} s)",
        f"- command: `{command}`",
        f"- machine: {info['nproc']} CPU cores (`nproc`), CPU `{info['cpu']}`, GPU: {info['gpu']}",
        f"- torch threads: {info['threads']} (`torch.set_num_threads`)",
        f"- load average (1 min) at start / end: {meta['load_start']} / {meta['load_end']} (the machine was shared "
        "with other jobs; treat small differences as noise)",
        f"- python {info['python']}, torch {info['torch']}, monai {info['monai']}, "
        f"pytorch-metric-learning {info['pml']}; repository commit {info['commit']} (plus uncommitted work)",
        "",
        "## (a) Loss forward + backward",
        "",
        f"Random unit embeddings, D = {DIM}, {VIEWS} views per sample (N / {VIEWS} samples with distinct labels), "
        f"float32, s = {SCALE:g} (pytorch-metric-learning: temperature 1/{SCALE:g}, classes = sample ids). "
        "Time of `loss(...)` + `.backward()` to the embeddings, in ms. The cases of one N run interleaved: "
        f"{meta['loss_warmup']} warm-up rounds, then rounds of one call of each case (order rotating each round) "
        f"until {meta['loss_repeats']} rounds or, after at least 5, {meta['loss_max_seconds']:g} s. "
        "`x AdaCon` = this case's time / AdaCon's time in the same round (median and p10-p90 of those paired "
        "ratios; above 1 = slower than AdaCon). `plain vectorised autograd` is eq. 6 written as ordinary torch ops "
        "(bool masks, `torch.logsumexp`, autograd backward), i.e. this package's loss before the hand-written "
        "backward.",
        "",
        "| device | N | loss | median ms | p10-p90 ms | rounds | x AdaCon, median | x AdaCon, p10-p90 | other load |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in loss_rows:
        lines.append(
            f"| {r['device']} | {r['n']} | {r['name']} | {r['median']:.3f} | {r['p10']:.3f}-{r['p90']:.3f} | "
            f"{r['repeats']} | {r['ratio_median']:.2f} | {r['ratio_p10']:.2f}-{r['ratio_p90']:.2f} | "
            f"{r['other_load']:.2f} |"
        )
    peer = [r for r in loss_rows if r["name"] == PEER]
    if peer:
        lines += [
            "",
            "Peer time / AdaCon time per N (paired per round; >= 1 means AdaCon is at least as fast):",
            "",
            "| device | N | AdaCon median ms | peer median ms | peer / AdaCon, median | p10-p90 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in peer:
            ours = next(x for x in loss_rows if x["device"] == r["device"] and x["n"] == r["n"] and x["name"] == OURS)
            lines.append(
                f"| {r['device']} | {r['n']} | {ours['median']:.3f} | {r['median']:.3f} | {r['ratio_median']:.2f} | "
                f"{r['ratio_p10']:.2f}-{r['ratio_p90']:.2f} |"
            )
    lines += [
        "",
        "`other load` = CPU used by other processes during the rounds (cores; median over rounds).",
    ]
    if not any(r["device"] == "cuda" for r in loss_rows):
        lines += ["", "CUDA: not available on this machine, no GPU numbers."]
    lines += [
        "",
        "The naive loop and the plain autograd version compute the same value as AdaCon (checked to 1e-4 before "
        "timing).",
        "",
    ]
    if train is not None:
        n = train["images_per_step"]
        reg_name, con_name = train["names"]
        med_reg, med_con = train["median"][reg_name], train["median"][con_name]
        lines += [
            "## (b) Training step throughput, EfficientNet-B1",
            "",
            "EfficientNet-B1 (MONAI `EfficientNetBN`, 1 channel, 128 x 128, random init) + regression head + "
            f"projection head (1280 -> 1280 -> 128), {n} images per step ({n // VIEWS} samples x {VIEWS} views), "
            "SGD (lr 0.01, momentum 0.9, weight decay 1e-4), float32, CPU. One step = "
            "`MultiViewTrainer._iteration`: flatten views, forward, `MultiTaskRegressionLoss`, backward, optimizer "
            "step. The two configurations have their own "
            f"copy of the same initial network and alternate round by round; {train['warmup']} warm-up rounds, "
            f"{train['steps']} timed rounds.",
            "",
            "| configuration | median s/step | min s/step | max s/step | images/s at median | images/s at min |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in train["names"]:
            med, lo = train["median"][name], train["min"][name]
            lines.append(f"| {name} | {med:.2f} | {lo:.2f} | {train['max'][name]:.2f} | {n / med:.2f} | {n / lo:.2f} |")
        for name in train["names"]:
            raw = ", ".join(f"{t:.2f} ({o:.1f})" for t, o in zip(train["times"][name], train["loads"][name]))
            lines.append(f"\nRaw timed step times, {name} (s, in round order; other load in cores): {raw}")
        clean = train["clean_rounds"]
        lines.append(
            f"\nUndisturbed rounds (other processes below {CLEAN_LOAD} cores during both steps): {len(clean)} of "
            f"{train['steps']}."
        )
        if clean:
            cm = train["clean_median"]
            cd = train["clean_paired_diff_median"]
            lines += [
                "",
                "| configuration, undisturbed rounds only | median s/step | images/s |",
                "|---|---:|---:|",
            ]
            lines += [f"| {name} | {cm[name]:.2f} | {n / cm[name]:.2f} |" for name in train["names"]]
            lines += [
                "",
                f"Median paired difference (AdaCon - regression only) over undisturbed rounds: {cd * 1e3:.1f} ms "
                f"({cd / cm[con_name] * 100:.2f} % of the AdaCon step).",
            ]
        diff = med_con - med_reg
        diff_min = train["min"][con_name] - train["min"][reg_name]
        lines += [
            "",
            "Contrastive branch share of the AdaCon step time (target: <= 5 %):",
            "",
            "| measure | ms per step | share of AdaCon step |",
            "|---|---:|---:|",
            f"| end to end: difference of median step times | {diff * 1e3:.1f} | {diff / med_con * 100:.2f} % |",
            f"| end to end: difference of min step times | {diff_min * 1e3:.1f} | "
            f"{diff_min / train['min'][con_name] * 100:.2f} % |",
            f"| end to end: median of paired per-round differences (min / max: {train['paired_diff_min'] * 1e3:.0f} / "
            f"{train['paired_diff_max'] * 1e3:.0f} ms) | {train['paired_diff_median'] * 1e3:.1f} | "
            f"{train['paired_diff_median'] / med_con * 100:.2f} % |",
            f"| direct, median of paired differences: ECDF + AdaCon fwd/bwd + projection-head backward + its SGD "
            f"update (N = {n}) | {train['t_branch_ms']:.1f} | {train['t_branch_ms'] / 1e3 / med_con * 100:.2f} % |",
            f"| direct, same, difference of minima | {train['t_branch_min_ms']:.1f} | "
            f"{train['t_branch_min_ms'] / 1e3 / train['min'][con_name] * 100:.2f} % (of min step) |",
            f"| direct: AdaCon loss fwd/bwd alone (N = {n}, from unit embeddings), median / min | "
            f"{train['t_loss_ms']:.2f} / {train['t_loss_min_ms']:.2f} | "
            f"{train['t_loss_ms'] / 1e3 / med_con * 100:.3f} % |",
            "",
            f"Other load during the direct branch timing: {train['direct_load']:.2f} cores; during the loss-alone "
            f"timing: {train['loss_load']:.2f} cores.",
            "",
            f"The projection-head forward ({train['t_proj_ms']:.1f} ms) is paid by both configurations, because "
            "`RegressionContrastiveNet` always returns the embedding; it is not counted in the branch. The end-to-end "
            "differences are dominated by run-to-run noise of the backbone step (other jobs on the same 2 cores; see "
            "the min-max spread and the raw times), so the direct timing is the reliable estimate of the branch cost; "
            "minima are the least disturbed measurements.",
            "",
        ]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _loadavg() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:  # pragma: no cover
        return "n/a"


def main(argv: list[str] | None = None) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10, help="timed training rounds per configuration (>= 5 advised)")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed training rounds")
    p.add_argument("--repeats", type=int, default=30, help="timed loss rounds per N (>= 5)")
    p.add_argument("--naive-repeats", type=int, default=20, help="timed calls of the naive loop")
    p.add_argument("--loss-warmup", type=int, default=3, help="untimed loss rounds per N")
    p.add_argument("--loss-max-seconds", type=float, default=60.0, help="stop timed loss rounds (after 5) past this")
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048, 4096], help="numbers of views N"
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--max-train-seconds", type=float, default=360.0, help="stop timed rounds (after 5) past this")
    p.add_argument(
        "--skip-train",
        action="store_true",
        help="only the loss benchmark (a); section (b) of an existing --out file is kept, marked with its date",
    )
    p.add_argument("--out", default=os.path.join(here, "results", "adacon_speed.md"), help="markdown output")
    args = p.parse_args(argv)
    command = "python " + " ".join([os.path.relpath(sys.argv[0])] + (sys.argv[1:] if argv is None else argv))

    t_start = time.perf_counter()
    load_start = _loadavg()
    torch.set_num_threads(args.threads)
    info = machine_info()
    devices = [torch.device("cpu")] + ([torch.device("cuda:0")] if torch.cuda.is_available() else [])
    loss_rows = []
    for dev in devices:
        loss_rows += bench_losses(
            dev, args.sizes, args.repeats, args.loss_warmup, args.naive_repeats, args.loss_max_seconds
        )
    train = None
    if not args.skip_train:
        train = bench_train_step(
            args.steps, args.warmup_steps, batch=8, views=VIEWS, size=128, max_seconds=args.max_train_seconds
        )
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed": time.perf_counter() - t_start,
        "load_start": load_start,
        "load_end": _loadavg(),
        "loss_warmup": args.loss_warmup,
        "loss_repeats": args.repeats,
        "loss_max_seconds": args.loss_max_seconds,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    kept = _kept_train_section(args.out) if train is None else None
    path = write_markdown(args.out, info, command, loss_rows, train, meta)
    if kept:
        with open(path, "a") as f:
            f.write("\n" + kept)
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump({"info": info, "command": command, "meta": meta, "loss": loss_rows, "train": train}, f, indent=1)
    print(open(path).read())


def _kept_train_section(path: str) -> str | None:
    """Section (b) of an earlier results file, headed by that run's date, for a run with ``--skip-train``."""
    if not os.path.isfile(path):
        return None
    text = open(path).read()
    if "## (b)" not in text:
        return None
    date = next((line for line in text.splitlines() if line.startswith("- date:")), "- date: unknown")
    section = text[text.index("## (b)") :]
    if section.startswith("## (b) (kept from"):
        return section
    head, rest = section.split("\n", 1)
    return f"{head} (kept from an earlier run, not re-run with this command; {date[2:]})\n{rest}"


if __name__ == "__main__":
    main()

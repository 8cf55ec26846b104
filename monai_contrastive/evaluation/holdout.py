"""Evaluation of a trained regression model on a held-out test split, under one or more test-time protocols."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence

import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer

from monai_contrastive.evaluation.tables import write_csv, write_json, write_metrics_table
from monai_contrastive.handlers.checkpoint import load_model_weights
from monai_contrastive.handlers.metrics import regression_metrics

__all__ = ["HoldoutEvaluation"]

logger = logging.getLogger(__name__)

_METRICS = ("mae", "rmse", "r2")


class HoldoutEvaluation:
    """
    Score one checkpoint on a held-out test split (e.g. EchoNet-Dynamic TEST) under several test-time protocols, with
    a breakdown by a grouping key when the items have it (AdaCon Table XIII: CAMUS by image ``quality``).

    Each protocol is ``{"preprocessing": transform, "inferer": inferer}`` and optional ``"batch_size"``; for echo
    videos ``single clip`` (one clip per video) and ``all clips`` (``AllClipsd`` + ``SelectOutputInferer(
    average_views=True)``, EchoNet's beat-to-beat averaging). For every protocol MAE / RMSE / R² are computed over
    the whole split and per group. Writes ``test_metrics.json``, ``test_metrics.md``, ``test_predictions.csv``
    (one row per item and protocol) and, with matplotlib, ``test_scatter.png`` (predicted vs. reference) to
    ``output_dir``; returns the metrics.

    Args:
        network: the network; its weights are replaced by the checkpoint's.
        items: labelled test items.
        protocols: ``{name: {"preprocessing": ..., "inferer": ..., "batch_size": 1}}``.
        ckpt_path: checkpoint (``{"model": state_dict, ...}`` or a bare state dict).
        output_dir: where the reports go.
        device: evaluation device.
        group_key: item key to break the metrics down by (skipped when no item has it).
        label_key: label key of the items.
        key_in_ckpt: entry of the checkpoint holding the model state dict.
        num_workers: DataLoader workers.
        amp: automatic mixed precision.
        unit: label unit for the report, e.g. ``"%"``.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        items: Sequence[dict],
        protocols: Mapping[str, Mapping],
        ckpt_path: str,
        output_dir: str,
        device: str | torch.device = "cpu",
        group_key: str | None = "quality",
        label_key: str = "label",
        key_in_ckpt: str | None = "model",
        num_workers: int = 0,
        amp: bool = False,
        unit: str = "",
    ) -> None:
        if not protocols:
            raise ValueError("HoldoutEvaluation needs at least one protocol.")
        for name, p in protocols.items():
            missing = {"preprocessing", "inferer"} - set(p)
            if missing:
                raise ValueError(f"protocol {name!r} lacks {sorted(missing)}.")
        self.network = network
        self.items = list(items)
        if not self.items:
            raise ValueError("HoldoutEvaluation: the test split is empty.")
        self.protocols = protocols
        self.ckpt_path = ckpt_path
        self.output_dir = output_dir
        self.device = torch.device(device)
        self.group_key = group_key
        self.label_key = label_key
        self.key_in_ckpt = key_in_ckpt
        self.num_workers = num_workers
        self.amp = amp
        self.unit = unit

    def _load(self) -> None:
        load_model_weights(self.network, self.ckpt_path, self.key_in_ckpt, self.device).to(self.device)

    def _predict(self, preprocessing: Callable, inferer: Inferer, batch_size: int) -> list[float]:
        loader = DataLoader(
            Dataset(self.items, preprocessing), batch_size=batch_size, num_workers=self.num_workers, shuffle=False
        )
        evaluator = SupervisedEvaluator(
            device=self.device,
            val_data_loader=loader,
            network=self.network,
            inferer=inferer,
            decollate=False,
            amp=self.amp,
        )
        preds: list[float] = []

        def _collect(engine):
            preds.extend(engine.state.output["pred"].detach().float().reshape(-1).cpu().tolist())

        evaluator.add_event_handler(Events.ITERATION_COMPLETED, _collect)
        evaluator.run()
        if len(preds) != len(self.items):
            raise RuntimeError(f"got {len(preds)} predictions for {len(self.items)} items (one output per item).")
        return preds

    def _groups(self) -> list[tuple[str, list[int]]]:
        if not self.group_key or not any(self.group_key in it for it in self.items):
            return []
        groups: dict[str, list[int]] = {}
        for i, it in enumerate(self.items):
            groups.setdefault(str(it.get(self.group_key, "missing")), []).append(i)
        return sorted(groups.items())

    def run(self) -> dict:
        self._load()
        os.makedirs(self.output_dir, exist_ok=True)
        labels = [float(it[self.label_key]) for it in self.items]
        result: dict = {"checkpoint": os.path.abspath(self.ckpt_path), "n": len(self.items), "protocols": {}}
        table: dict[str, dict] = {}
        all_preds: dict[str, list[float]] = {}
        groups = self._groups()
        for name, proto in self.protocols.items():
            preds = self._predict(proto["preprocessing"], proto["inferer"], int(proto.get("batch_size", 1)))
            all_preds[name] = preds
            entry = {"all": regression_metrics(preds, labels) | {"n": len(preds)}}
            for g, idx in groups:
                entry[f"{self.group_key}={g}"] = regression_metrics([preds[i] for i in idx], [labels[i] for i in idx])
                entry[f"{self.group_key}={g}"]["n"] = len(idx)
            result["protocols"][name] = entry
            for part, m in entry.items():
                row = f"{name}" if part == "all" else f"{name}, {part}"
                table[row] = {k: "n/a" if math.isnan(m[k]) else f"{m[k]:.3f}" for k in _METRICS} | {"n": m["n"]}
            logger.info(f"{name}: " + ", ".join(f"{k}={entry['all'][k]:.4g}" for k in _METRICS))
        write_json(os.path.join(self.output_dir, "test_metrics.json"), result)
        unit = f" (MAE/RMSE in {self.unit})" if self.unit else ""
        write_metrics_table(
            os.path.join(self.output_dir, "test_metrics.md"), table, f"Held-out test split{unit}", [*_METRICS, "n"]
        )
        extra = [self.group_key] if groups else []
        rows = []
        for i, it in enumerate(self.items):
            g = [it.get(self.group_key, "")] if groups else []
            rows.append([it.get("image"), labels[i], *g, *[all_preds[n][i] for n in all_preds]])
        header = ["image", "label", *extra, *[f"pred ({n})" for n in all_preds]]
        write_csv(os.path.join(self.output_dir, "test_predictions.csv"), header, rows)
        self._scatter(labels, all_preds)
        print(open(os.path.join(self.output_dir, "test_metrics.md")).read(), flush=True)
        return result

    def _scatter(self, labels: list[float], preds: dict[str, list[float]]) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # pragma: no cover - matplotlib is a dependency
            return
        fig, axes = plt.subplots(1, len(preds), figsize=(4.2 * len(preds), 4), squeeze=False)
        lo, hi = min(labels + [min(p) for p in preds.values()]), max(labels + [max(p) for p in preds.values()])
        for ax, (name, p) in zip(axes[0], preds.items()):
            m = regression_metrics(p, labels)
            ax.scatter(labels, p, s=8, alpha=0.6)
            ax.plot([lo, hi], [lo, hi], "k--", lw=1)
            ax.set_xlabel(f"reference {self.unit}".strip())
            ax.set_ylabel(f"predicted {self.unit}".strip())
            ax.set_title(f"{name}: MAE {m['mae']:.2f}, R² {m['r2']:.2f}")
        fig.tight_layout()
        fig.savefig(os.path.join(self.output_dir, "test_scatter.png"), dpi=100)
        plt.close(fig)

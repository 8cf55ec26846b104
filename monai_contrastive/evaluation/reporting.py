"""End-of-run summaries printed by the bundles."""

from __future__ import annotations

import json
import os

import torch

from monai_contrastive.io import atomic_write_json

__all__ = ["report_predictions", "report_validation"]


def _training_time(trainer) -> dict:
    """Wall time of the trainer's ``run`` (ignite's ``state.times``), its iterations, threads and load average."""
    state = getattr(trainer, "state", None)
    times = getattr(state, "times", None) or {}
    seconds = times.get("COMPLETED") or times.get("EPOCH_COMPLETED")
    out = {"iterations": int(getattr(state, "iteration", 0) or 0), "torch_threads": torch.get_num_threads()}
    if seconds:
        out["seconds"] = round(float(seconds), 1)
    if hasattr(os, "getloadavg"):
        out["load_average_1min"] = round(os.getloadavg()[0], 2)
    return out


def report_validation(
    evaluator, best_saver=None, output_file: str | None = None, trainer=None, r2_target: float | None = None
) -> dict:
    """Print (and optionally save as JSON) the last validation metrics and those of the best checkpoint.

    When no validation ran in this process (a re-run of a finished run resumes at its end and trains nothing), the
    report of the earlier run in ``output_file`` is printed and kept, never overwritten with an empty result.

    Args:
        evaluator: the validation engine (its ``state.metrics``).
        best_saver: a :class:`~monai_contrastive.handlers.BestModelSaver` (best epoch and its metrics).
        output_file: JSON to write (default: ``val_metrics.json`` beside the best model).
        trainer: the training engine; adds the training wall time, iterations, torch threads and the machine's load
            average to the report (timings on a loaded machine are not timings on an idle one).
        r2_target: the demos' bar: the summary says whether the best checkpoint's validation R² (``val_r2``)
            reached it, i.e. whether the model learned the label rather than its mean.
    """
    if output_file is None and best_saver is not None:
        output_file = os.path.join(os.path.dirname(best_saver.save_path), "val_metrics.json")
    last = {k: float(v) for k, v in evaluator.state.metrics.items() if isinstance(v, (int, float))}
    if not last and output_file and os.path.isfile(output_file):
        with open(output_file) as f:
            previous = json.load(f)
        print(
            f"\nNo validation ran in this run (nothing left to train?); the report of the earlier run, {output_file}:"
            f"\n{json.dumps(previous, indent=2)}",
            flush=True,
        )
        return previous
    result = {"last_validation": last}
    if best_saver is not None and best_saver.best_metrics:
        result["best_checkpoint"] = {"epoch": best_saver.best_epoch, "path": best_saver.save_path}
        result["best_checkpoint"].update(best_saver.best_metrics)
    lines = ["", "Validation (held-out data, never trained on):"]
    for name, m in result.items():
        vals = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())
        lines.append(f"  {name}: {vals}")
    if trainer is not None:
        result["training"] = _training_time(trainer)
        t = result["training"]
        load = f", load average {t['load_average_1min']:.2f}" if "load_average_1min" in t else ""
        took = f"{t['seconds'] / 60:.1f} min" if "seconds" in t else "unknown time"
        lines.append(f"  training: {t['iterations']} iterations in {took} ({t['torch_threads']} torch threads{load})")
    if r2_target is not None:
        best_r2 = result.get("best_checkpoint", {}).get("val_r2", last.get("val_r2"))
        result["r2_target"] = {"target": float(r2_target), "val_r2": best_r2}
        if best_r2 is None:
            lines.append(f"  demo target: validation R² >= {r2_target:g}: no val_r2 metric to check")
        else:
            ok = best_r2 >= r2_target
            result["r2_target"]["reached"] = bool(ok)
            verdict = (
                "reached: the model learned the label" if ok else "NOT reached (a model near R² 0 predicts ~the mean)"
            )
            lines.append(f"  demo target: validation R² {best_r2:.3f} (best checkpoint) >= {r2_target:g}: {verdict}")
    print("\n".join(lines), flush=True)
    if output_file:
        atomic_write_json(result, output_file)
    return result


def report_predictions(
    csv_path: str, items, label_key: str = "label", output_file: str | None = None, title: str = "Test set"
) -> dict:
    """Match a predictions CSV (``filename, pred`` rows, as MONAI's ``ClassificationSaver`` writes) to the items.

    When every item has a numeric label, print MAE / RMSE / R² of the predictions (external-test protocol of
    AdaCon Table VI) and save them as JSON next to the CSV. Returns the metrics (empty without labels).
    """
    import csv

    from monai_contrastive.handlers.metrics import regression_metrics

    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"predictions file {csv_path!r} was not written.")
    preds = {}
    with open(csv_path, newline="") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[0] != "filename":
                preds[os.path.abspath(row[0])] = float(row[1])
    pairs = []
    for i, item in enumerate(items):
        path = os.path.abspath(str(item["image"]))
        if path not in preds:
            raise KeyError(f"item {i} ({path}) has no prediction in {csv_path}.")
        label = item.get(label_key)
        try:
            pairs.append((preds[path], float(label)))
        except (TypeError, ValueError):
            pairs = []
            break
    print(f"{len(preds)} predictions written to {csv_path}", flush=True)
    if not pairs:
        return {}
    m = regression_metrics([p for p, _ in pairs], [t for _, t in pairs])
    m["n"] = len(pairs)
    print(f"{title}: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items() if k != "n"), flush=True)
    atomic_write_json(m, output_file or os.path.splitext(csv_path)[0] + "_metrics.json")
    return m

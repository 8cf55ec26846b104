"""End-of-run summaries printed by the bundles."""

from __future__ import annotations

import json
import os

import torch

from monai_contrastive.io import atomic_write_json

__all__ = ["report_heldout_test", "report_predictions", "report_validation"]


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
    evaluator,
    best_saver=None,
    output_file: str | None = None,
    trainer=None,
    r2_target: float | None = None,
    test_items=None,
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
        r2_target: a bar for R²: the summary says whether it was reached, by the held-out test score when
            ``test_items`` are given, else by the best checkpoint's validation R² (``val_r2``).
        test_items: items that neither training nor checkpoint selection saw: after the validation report the best
            checkpoint is scored on them (:func:`report_heldout_test`), its result under ``"test"``.
    """
    result = _report_validation(evaluator, best_saver, output_file, trainer, None if test_items else r2_target)
    if test_items is not None:
        if best_saver is None:
            raise ValueError("report_validation: test_items need best_saver (the checkpoint to score).")
        result["test"] = report_heldout_test(evaluator, best_saver, test_items, r2_target=r2_target)
    return result


def _report_validation(evaluator, best_saver, output_file, trainer, r2_target) -> dict:
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
    lines = [
        "",
        "Validation (never trained on, but the best checkpoint is selected on it, so its best score is optimistic;"
        " the held-out test score, where reported, is the fair one):",
    ]
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
        line, result["r2_target"] = _r2_verdict(best_r2, r2_target, "validation (best checkpoint)")
        lines.append(line)
    print("\n".join(lines), flush=True)
    if output_file:
        atomic_write_json(result, output_file)
    return result


def _r2_verdict(r2: float | None, target: float, what: str) -> tuple[str, dict]:
    out: dict = {"target": float(target), "r2": r2}
    if r2 is None:
        return f"  demo target: {what} R² >= {target:g}: no R² to check", out
    out["reached"] = bool(r2 >= target)
    verdict = (
        "reached: the model learned the label"
        if out["reached"]
        else "NOT reached (a model near R² 0 predicts ~the mean)"
    )
    return f"  demo target: {what} R² {r2:.3f} >= {target:g}: {verdict}", out


def report_heldout_test(
    evaluator,
    best_saver,
    items,
    r2_target: float | None = None,
    output_file: str | None = None,
    batch_size: int | None = None,
    title: str = "Held-out test",
) -> dict:
    """Score the selected (best) checkpoint on items that neither training nor checkpoint selection saw.

    Loads ``best_saver``'s checkpoint (``{"model": state_dict, ...}``) into the evaluator's network, runs its
    inferer over ``items`` with the validation preprocessing (the transform of the evaluator's dataset), and prints
    MAE / RMSE / R² over all items. The validation engine itself is not run (its handlers would treat the test
    score as a validation score and could overwrite the best checkpoint).

    Args:
        evaluator: the validation engine of the run (network, inferer, prepare_batch, device, data loader).
        best_saver: the run's :class:`~monai_contrastive.handlers.BestModelSaver`; its file must exist.
        items: the held-out test items (``{"image": ..., "label": number}``), e.g. the datalist's ``testing`` list.
        r2_target: the demo's bar, applied to this held-out R².
        output_file: JSON to write (default: ``heldout_test_metrics.json`` beside the best model).
        batch_size: default: the validation loader's.
        title: the report's heading.

    Raises:
        ValueError: no items, or an item without a numeric label.
        FileNotFoundError: the best checkpoint was not written (no validation ran).
    """
    from monai.data import DataLoader, Dataset

    from monai_contrastive.handlers.metrics import regression_metrics
    from monai_contrastive.io import read_state_dict

    items = list(items)
    if not items:
        raise ValueError(f"{title}: no test items to score.")
    for i, item in enumerate(items):
        try:
            float(item["label"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{title}: test item {i} ({item.get('image')}) has no numeric 'label'.") from None
    path = best_saver.save_path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{title}: the best checkpoint {path} was not written (no validation ran?).")
    network = evaluator.network
    network.load_state_dict(read_state_dict(path, key="model", what="best checkpoint"))
    loader = evaluator.data_loader
    data = DataLoader(
        Dataset(items, transform=loader.dataset.transform),
        batch_size=batch_size or loader.batch_size or 1,
        shuffle=False,
        num_workers=0,
    )
    preds, labels = [], []
    network.eval()
    with torch.inference_mode():
        for batch in data:
            prepared = evaluator.prepare_batch(batch, evaluator.state.device, evaluator.non_blocking)
            inputs, targets = prepared[0], prepared[1]
            args, kwargs = (prepared[2], prepared[3]) if len(prepared) == 4 else ((), {})
            out = evaluator.inferer(inputs, network, *args, **kwargs)
            preds.append(out.detach().float().reshape(-1).cpu())
            labels.append(torch.as_tensor(targets).float().reshape(-1).cpu())
    metrics = regression_metrics(torch.cat(preds), torch.cat(labels))
    result: dict = {"test": {**metrics, "n": len(items)}, "checkpoint": path}
    if best_saver.best_metrics:
        result["checkpoint_selected_on_validation"] = {"epoch": best_saver.best_epoch, **best_saver.best_metrics}
    lines = [
        "",
        f"{title} ({len(items)} items that neither training nor checkpoint selection saw), best checkpoint:",
        "  " + ", ".join(f"test_{k}={v:.4f}" for k, v in metrics.items()),
    ]
    if r2_target is not None:
        line, result["r2_target"] = _r2_verdict(metrics["r2"], r2_target, "held-out test")
        lines.append(line)
    print("\n".join(lines), flush=True)
    atomic_write_json(result, output_file or os.path.join(os.path.dirname(path), "heldout_test_metrics.json"))
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

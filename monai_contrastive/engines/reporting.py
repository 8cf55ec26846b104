"""End-of-run summaries printed by the bundles."""

from __future__ import annotations

import json
import os

__all__ = ["report_validation"]


def report_validation(evaluator, best_saver=None, output_file: str | None = None) -> dict:
    """Print (and optionally save as JSON) the last validation metrics and those of the best checkpoint."""
    last = {k: float(v) for k, v in evaluator.state.metrics.items() if isinstance(v, (int, float))}
    result = {"last_validation": last}
    if best_saver is not None and best_saver.best_metrics:
        result["best_checkpoint"] = {"epoch": best_saver.best_epoch, "path": best_saver.save_path}
        result["best_checkpoint"].update(best_saver.best_metrics)
    lines = ["", "Validation (held-out fold, never trained on):"]
    for name, m in result.items():
        vals = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())
        lines.append(f"  {name}: {vals}")
    print("\n".join(lines), flush=True)
    if output_file is None and best_saver is not None:
        output_file = os.path.join(os.path.dirname(best_saver.save_path), "val_metrics.json")
    if output_file:
        os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
        with open(output_file, "w") as f:
            json.dump(result, f, indent=2)
    return result

"""The ``monai-contrastive`` command (python-fire).

monai-contrastive list
monai-contrastive demo adacon_bmd_xray            # train on the embedded synthetic demo data
monai-contrastive train adacon_bmd_xray --dataset_dir /data/bmd --fold 2
monai-contrastive evaluate adacon_bmd_xray        # per-fold and averaged MAE / RMSE / R²
monai-contrastive infer adacon_bmd_xray           # fold ensemble -> eval/predictions.csv
monai-contrastive figure adacon_bmd_xray          # feature spread / similarity vs label distance (AdaCon Fig. 3)
monai-contrastive demo adacon_lvef_echo           # LVEF from echo videos on synthetic EchoNet-layout data
monai-contrastive evaluate adacon_lvef_echo --demo  # TEST split: single clip and all clips averaged
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["bundles_dir", "bundle_path", "list_bundles", "run_bundle", "main"]


def bundles_dir() -> str:
    """``$MONAI_CONTRASTIVE_BUNDLES`` or the ``bundles/`` folder of the source checkout."""
    env = os.environ.get("MONAI_CONTRASTIVE_BUNDLES")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bundles")


def bundle_path(name: str) -> str:
    path = name if os.path.isdir(name) else os.path.join(bundles_dir(), name)
    if not os.path.isfile(os.path.join(path, "configs", "metadata.json")):
        raise FileNotFoundError(f"no bundle {name!r} (looked in {path}); `monai-contrastive list` shows the bundles.")
    return path


def list_bundles() -> list[dict]:
    root = bundles_dir()
    out = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        meta = os.path.join(root, name, "configs", "metadata.json")
        if os.path.isfile(meta):
            with open(meta) as f:
                m = json.load(f)
            out.append({"name": name, "task": m.get("task", ""), "version": m.get("version", "")})
    return out


def run_bundle(name: str, configs: list[str], **overrides) -> None:
    """``python -m monai.bundle run`` with ``configs`` (names in the bundle's configs/ folder) and CLI overrides."""
    from monai.bundle import run

    root = bundle_path(name)
    files = [c if os.path.isfile(c) else os.path.join(root, "configs", c) for c in configs]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"bundle {name!r} has no config(s) {missing}.")
    overrides.setdefault("bundle_root", root)
    run(
        config_file=files,
        meta_file=os.path.join(root, "configs", "metadata.json"),
        logging_file=os.path.join(root, "configs", "logging.conf"),
        **overrides,
    )


class CLI:
    """monai-contrastive: contrastive learning bundles for MONAI."""

    def list(self) -> None:
        """The bundles and what they do."""
        for b in list_bundles():
            print(f"{b['name']:<24} v{b['version']:<8} {b['task']}")

    def demo(self, name: str = "adacon_bmd_xray", **overrides) -> None:
        """Train a bundle on its embedded synthetic demo data (train.json + demo.json)."""
        overrides.setdefault("dataset_dir", "")
        run_bundle(name, ["train.json", "demo.json"], **overrides)

    def train(self, name: str, **overrides) -> None:
        """Train a bundle (train.json); pass --dataset_dir for real data, --fold for the fold."""
        run_bundle(name, ["train.json"], **overrides)

    def evaluate(self, name: str, demo: bool = False, **overrides) -> None:
        """Evaluate trained models (train.json + evaluate.json): held-out folds (BMD) or the TEST split (LVEF)."""
        run_bundle(name, ["train.json"] + (["demo.json"] if demo else []) + ["evaluate.json"], **overrides)

    def infer(self, name: str, demo: bool = False, **overrides) -> None:
        """Run inference.json (fold ensemble; predictions CSV in the bundle's eval/ folder).

        ``--demo`` takes the settings of the demo override that inference.json also has (image size, clip length,
        demo data), for models trained with ``demo``.
        """
        if demo:
            configs = os.path.join(bundle_path(name), "configs")
            with open(os.path.join(configs, "demo.json")) as f:
                demo_cfg = json.load(f)
            with open(os.path.join(configs, "inference.json")) as f:
                infer_cfg = json.load(f)
            for key, value in demo_cfg.items():
                if key in infer_cfg:
                    overrides.setdefault(key, value)
        run_bundle(name, ["inference.json"], **overrides)

    def figure(
        self, name: str = "adacon_bmd_xray", fold: int = 0, out: str | None = None, demo: bool = False, **overrides
    ) -> None:
        """Plot learned features of a trained fold model (AdaCon Fig. 3) as PNG.

        ``--demo`` reads the demo override too (for a model trained with ``demo``).
        """
        from monai_contrastive.visualize import feature_figure_for_bundle

        files = ["train.json", "demo.json"] if demo else ["train.json"]
        overrides.setdefault("config_files", files)
        res = feature_figure_for_bundle(bundle_path(name), fold=fold, out=out, **overrides)
        print(f"wrote {res['path']} (Spearman rho of cosine similarity vs ECDF label distance: {res['spearman']:.3f})")


def main(argv: list[str] | None = None) -> None:
    import fire

    fire.Fire(CLI(), command=argv if argv is not None else sys.argv[1:], name="monai-contrastive")


if __name__ == "__main__":
    main()

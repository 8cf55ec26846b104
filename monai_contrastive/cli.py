"""The ``monai-contrastive`` command (python-fire).

monai-contrastive list
monai-contrastive demo adacon_bmd_xray            # train on the embedded synthetic demo data
monai-contrastive train adacon_bmd_xray --dataset_dir /data/bmd --fold 2
monai-contrastive evaluate adacon_bmd_xray        # per-fold and averaged MAE / RMSE / R²
monai-contrastive infer adacon_bmd_xray           # fold ensemble -> eval/predictions.csv
monai-contrastive figure adacon_bmd_xray          # feature spread / similarity vs label distance (AdaCon Fig. 3)
monai-contrastive export adacon_bmd_xray --out zoo  # zoo-ready, self-contained copy of a trained bundle
monai-contrastive demo adacon_lvef_echo           # LVEF from echo videos on synthetic EchoNet-layout data
monai-contrastive evaluate adacon_lvef_echo --demo  # TEST split: single clip and all clips averaged
monai-contrastive demo lrc_multiorgan_ct          # LRC + MoCo pretraining -> fine-tuning -> Dice/NSD on synthetic CT
monai-contrastive pretrain lrc_multiorgan_ct --method moco --dataset_dir /data/ct
monai-contrastive train --help                    # a command's options, with the bundle's config keys

The bundles are found in ``$MONAI_CONTRASTIVE_BUNDLES``, else in the copy shipped inside the installed package
(``monai_contrastive/_bundles``, written by ``pip install``), else in the ``bundles/`` folder of a source checkout.

An error ends the command with exit status 1 and a short summary on stderr whose first and last lines name what
failed (the file, the datalist item); ``MONAI_CONTRASTIVE_TRACEBACK=1`` prints the full traceback too.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import sys
import traceback

from monai_contrastive.bundles import (
    bundle_path,
    bundles_dir,
    demo_configs,
    demo_inference_overrides,
    demo_stages,
    list_bundles,
    pretrain_configs,
)

__all__ = ["run_bundle", "error_summary", "main"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_TRACEBACK_ENV = "MONAI_CONTRASTIVE_TRACEBACK"


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
        bundles = list_bundles()
        if not bundles:
            print(f"no bundle found in {bundles_dir()}; set MONAI_CONTRASTIVE_BUNDLES to a folder of bundles.")
        for b in bundles:
            print(f"{b['name']:<24} v{b['version']:<8} {b['task']}")

    def demo(self, name: str, **overrides) -> None:
        """Train a bundle on its embedded synthetic demo data (train.json + demo.json, or what the bundle declares).

        A bundle that declares demo stages runs those in order instead (e.g. pretraining, then fine-tuning from it,
        then evaluation); the options given here apply to every stage.
        """
        overrides.setdefault("dataset_dir", "")
        stages = demo_stages(name)
        if not stages:
            run_bundle(name, demo_configs(name), **overrides)
            return
        for i, stage in enumerate(stages):
            print(
                f"== demo stage {i + 1}/{len(stages)}: {stage.get('title', ' + '.join(stage['configs']))}", flush=True
            )
            run_bundle(name, list(stage["configs"]), **{**stage.get("overrides", {}), **overrides})
            # shut the finished stage's persistent DataLoader workers down here, before the next stage forks its own
            # workers (which would otherwise inherit the old iterator and warn when they collect it)
            gc.collect()

    def pretrain(self, name: str, method: str | None = None, demo: bool = False, **overrides) -> None:
        """Self-supervised pretraining with the configs the bundle declares for ``--method`` (e.g. ``lrc`` or
        ``moco``; default: the bundle's default method); ``--demo`` adds the demo sizes and the embedded synthetic
        data."""
        if demo:
            overrides.setdefault("dataset_dir", "")
        run_bundle(name, pretrain_configs(name, method, demo=demo), **overrides)

    def train(self, name: str, **overrides) -> None:
        """Train a bundle (train.json); pass --dataset_dir for real data, --fold for the fold."""
        run_bundle(name, ["train.json"], **overrides)

    def evaluate(self, name: str, demo: bool = False, **overrides) -> None:
        """Evaluate trained models (train.json + evaluate.json): held-out folds (BMD) or the TEST split (LVEF)."""
        run_bundle(name, ["train.json"] + (["demo.json"] if demo else []) + ["evaluate.json"], **overrides)

    def infer(self, name: str, demo: bool = False, **overrides) -> None:
        """Run inference.json (fold ensemble; predictions CSV in the bundle's eval/ folder).

        ``--demo`` takes the settings of the demo override that inference.json also has (image size, clip length,
        demo data, backbone) and its ``inference_overrides``, for models trained with ``demo``.
        """
        if demo:
            for key, value in demo_inference_overrides(bundle_path(name)).items():
                overrides.setdefault(key, value)
        run_bundle(name, ["inference.json"], **overrides)

    def figure(self, name: str, fold: int = 0, out: str | None = None, demo: bool = False, **overrides) -> None:
        """Plot learned features of a trained fold model (AdaCon Fig. 3) as PNG.

        ``--demo`` reads the demo override too (for a model trained with ``demo``).
        """
        from monai_contrastive.visualize import feature_figure_for_bundle

        files = ["train.json", "demo.json"] if demo else ["train.json"]
        overrides.setdefault("config_files", files)
        res = feature_figure_for_bundle(bundle_path(name), fold=fold, out=out, **overrides)
        print(f"wrote {res['path']} (Spearman rho of cosine similarity vs ECDF label distance: {res['spearman']:.3f})")

    def export(
        self,
        name: str,
        out: str = "zoo",
        ckpt: str | list | None = None,
        weights_url: str | None = None,
        torchscript: bool = True,
        overwrite: bool = False,
        demo: bool = False,
    ) -> None:
        """Write a trained bundle as a self-contained model-zoo bundle folder OUT/NAME.

        The plugin code under scripts/ (configs point there), models/model.pt as a plain state dict (the fold
        ensemble where the bundle has folds), models/model.ts (TorchScript), large_files.yml, metadata listing only
        installable packages. ``--ckpt`` picks the weights (one file, or a list of fold files); default: the
        bundle's models/model.pt, else its models/fold<k>/model.pt. ``--demo True`` exports a model trained by
        ``demo``: the exported inference.json takes the demo's network and input settings (as ``infer --demo``).
        """
        from monai_contrastive.export import DEFAULT_WEIGHTS_URL, export_bundle

        export_bundle(
            name,
            out,
            ckpt=ckpt,
            weights_url=weights_url or DEFAULT_WEIGHTS_URL,
            torchscript=torchscript,
            overwrite=overwrite,
            demo=demo,
        )


# the config files a command reads, for the option list of its help
_COMMAND_CONFIGS = {
    "demo": demo_configs,
    "pretrain": pretrain_configs,
    "train": lambda name: ["train.json"],
    "evaluate": lambda name: ["train.json", "evaluate.json"],
    "infer": lambda name: ["inference.json"],
    "figure": lambda name: ["train.json"],
}


def _command_configs(command: str, name: str) -> list[str]:
    try:
        return _COMMAND_CONFIGS[command](name)
    except (FileNotFoundError, ValueError):  # no such bundle, or it lacks this command: no config keys to list
        return []


def _commands() -> dict:
    return {n: getattr(CLI, n) for n in dir(CLI) if not n.startswith("_") and callable(getattr(CLI, n))}


def _config_options(name: str, files: list[str]) -> list[tuple[str, str]]:
    """The top-level scalar keys of a bundle's configs (the ``--key value`` overrides a user sets) and defaults."""
    try:
        root = bundle_path(name)
    except FileNotFoundError:
        return []
    merged: dict = {}
    for f in files:
        path = os.path.join(root, "configs", f)
        if os.path.isfile(path):
            with open(path) as fh:
                merged.update(json.load(fh))
    out = []
    for key, value in merged.items():
        if key.startswith("_") or key in ("imports", "initialize", "run", "finalize") or isinstance(value, dict):
            continue
        if isinstance(value, list) and not all(isinstance(v, (int, float, str)) for v in value):
            continue
        text = json.dumps(value) if not isinstance(value, str) else value
        out.append((key, text if len(text) <= 70 else text[:67] + "..."))
    return out


def command_help(command: str, args: list[str]) -> str:
    """The help text of one command: usage, description, its own options and the bundle's config keys."""
    func = _commands()[command]
    params = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.name == "name"]
    usage = f"usage: monai-contrastive {command}"
    if positional:
        usage += " [NAME]" if positional[0].default is not inspect.Parameter.empty else " NAME"
    if any(p.kind is p.VAR_KEYWORD for p in params):
        usage += " [--KEY VALUE ...]"
    lines = [usage, "", inspect.cleandoc(func.__doc__ or "")]
    own = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    if own:
        lines += ["", "options:"]
        for p in own:
            default = "" if p.default is inspect.Parameter.empty else f" (default: {p.default!r})"
            flag = "NAME" if p.name == "name" else f"--{p.name}"
            what = "bundle name (`monai-contrastive list`) or bundle folder" if p.name == "name" else ""
            lines.append(f"  {flag:<24} {what}{default}".rstrip())
    if command in _COMMAND_CONFIGS:
        name_param = next((p for p in params if p.name == "name"), None)
        name = next((a for a in args if not a.startswith("-")), None)
        if name is None and name_param is not None and name_param.default is not inspect.Parameter.empty:
            name = name_param.default
        files = _command_configs(command, name) if name else []
        options = _config_options(name, files) if files else []
        lines += ["", "  --KEY VALUE              override any config key of the bundle (nested: --train#trainer#amp)"]
        if options:
            lines += ["", f"config keys of {name} ({' + '.join(files)}), with their defaults:"]
            lines += [f"  --{k:<22} {v}" for k, v in options]
        elif name_param is not None:
            lines.append("  (give a bundle name before --help to list its config keys)")
    return "\n".join(lines)


def main_help() -> str:
    lines = ["usage: monai-contrastive COMMAND [NAME] [--KEY VALUE ...]", "", inspect.cleandoc(CLI.__doc__ or ""), ""]
    lines.append("commands:")
    for name, func in _commands().items():
        first = inspect.cleandoc(func.__doc__ or "").splitlines()[0] if func.__doc__ else ""
        lines.append(f"  {name:<10} {first}")
    lines += ["", "`monai-contrastive COMMAND --help` lists a command's options."]
    return "\n".join(lines)


def _chain(error: BaseException) -> list[BaseException]:
    """The exception and its causes, outermost first, root cause last."""
    out: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ if e.__cause__ is not None else (None if e.__suppress_context__ else e.__context__)
    return out


def _raised_here(error: BaseException) -> bool:
    tb = error.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and os.path.abspath(last.tb_frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep)


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    first = first if len(first) <= limit else first[: limit - 3] + "..."
    return f"{type(error).__name__}: {first}"


def error_summary(error: BaseException, prog: str = "monai-contrastive") -> str:
    """A short report of ``error`` for a user: the first and the last line give the error that names the item (the
    deepest exception in the chain raised by this package, whose messages name the file / datalist item; else the
    root cause), the lines between show the chain from the outermost exception to the root cause."""
    chain = _chain(error)
    key = next((e for e in reversed(chain) if _raised_here(e)), chain[-1])
    message = str(key).strip()
    lines = [f"{prog}: error: {type(key).__name__}: {message}"]
    if len(chain) > 1:
        lines.append("raised as (outermost first, root cause last):")
        lines += [f"  {'*' if e is key else '-'} {_one_line(e)}" for e in chain]
    if not os.environ.get(_TRACEBACK_ENV):
        lines.append(f"(set {_TRACEBACK_ENV}=1 for the full traceback)")
    lines.append(f"{prog}: error: {_one_line(key)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(main_help())
        return
    if argv[0] in _commands() and any(a in ("-h", "--help") for a in argv[1:]):
        # python-fire passes --help after a command with **kwargs on as an override (and starts the run)
        print(command_help(argv[0], [a for a in argv[1:] if a not in ("-h", "--help")]))
        return
    import fire

    try:
        fire.Fire(CLI(), command=argv, name="monai-contrastive")
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        if os.environ.get(_TRACEBACK_ENV):
            traceback.print_exc()
        print(error_summary(e), file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

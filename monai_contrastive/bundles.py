"""Where the bundles are, and what the ``monai-contrastive`` commands need to know about one, read from the bundle.

A bundle declares what the commands need in ``configs/commands.json`` (a file that ``python -m monai.bundle run``
never reads), so that a new bundle needs no edit of the package. Every section is optional::

    {
        "demo": {
            "configs": ["train.json", "demo.json"],
            "stages": [
                {"title": "pretraining", "configs": ["pretrain.json", "demo_pretrain.json"]},
                {"title": "fine-tuning", "configs": ["train.json", "demo.json"], "overrides": {"init": "pretrained"}}
            ],
            "inference_overrides": {"network_def#backbone#channels": [16, 32]}
        },
        "pretrain": {
            "methods": {
                "lrc": ["pretrain_common.json", "pretrain_lrc.json"],
                "moco": ["pretrain_common.json", "pretrain_moco.json"]
            },
            "default_method": "lrc",
            "demo_configs": ["demo_pretrain.json"]
        },
        "checkpoints": {
            "checkpoint_key": "model",
            "fold_checkpoints": "models/fold{fold}/model.pt",
            "num_folds_key": "num_folds"
        }
    }

- ``demo``: ``configs`` are what ``monai-contrastive demo NAME`` runs (default ``train.json`` + ``demo.json``);
  ``stages``, when given, are run in order instead (each a list of configs and optional ``overrides``; the
  options of the command line apply to every stage); ``inference_overrides`` are what ``infer --demo`` and
  ``export --demo`` set in ``inference.json`` besides the keys it shares with the demo's last config (image size,
  clip length, demo data), e.g. the demo's backbone where ``inference.json`` nests it differently.
- ``pretrain``: the configs of each method, merged in order (``monai-contrastive pretrain NAME --method M``), the
  method used when none is given (not needed for a single method), and the configs ``--demo`` adds. A bundle
  without this section but with a ``configs/pretrain.json`` pretrains with that file alone (no method).
- ``checkpoints``: the checkpoint entry holding the state dict (a plain state dict is taken as it is), the served
  model (default ``models/model.pt``), and, for a bundle that serves a fold ensemble, where training writes the
  fold models (``{fold}`` is the fold number) and the key of ``inference.json`` that ``export`` sets to the number
  of exported folds. Read by ``export`` and ``figure``.

A demo config's own top-level ``demo_stages`` and ``inference_overrides`` keys (in ``demo.json``) declare the same as
``demo.stages`` and ``demo.inference_overrides``; ``commands.json`` wins where both have them.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUNDLES_ENV",
    "COMMANDS_FILE",
    "CheckpointLayout",
    "bundle_commands",
    "bundle_path",
    "bundles_dir",
    "demo_configs",
    "demo_inference_overrides",
    "demo_stages",
    "checkpoint_layout",
    "fold_checkpoints",
    "list_bundles",
    "pretrain_configs",
    "pretrain_methods",
]

BUNDLES_ENV = "MONAI_CONTRASTIVE_BUNDLES"
COMMANDS_FILE = "commands.json"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_DEFAULT_DEMO = ["train.json", "demo.json"]
_SECTIONS = ("demo", "pretrain", "checkpoints")


# --------------------------------------------------------------------------------------------------- discovery


def _has_bundles(folder: str) -> bool:
    return os.path.isdir(folder) and any(
        os.path.isfile(os.path.join(folder, name, "configs", "metadata.json")) for name in os.listdir(folder)
    )


def bundles_dir() -> str:
    """``$MONAI_CONTRASTIVE_BUNDLES``; else the bundles shipped in the installed package (``_bundles``); else the
    ``bundles/`` folder of the source checkout this package runs from (an editable install)."""
    env = os.environ.get(BUNDLES_ENV)
    if env:
        return env
    shipped = os.path.join(_PACKAGE_DIR, "_bundles")
    if _has_bundles(shipped):
        return shipped
    return os.path.join(os.path.dirname(_PACKAGE_DIR), "bundles")


def bundle_path(name: str) -> str:
    """The folder of bundle ``name`` (a name in :func:`bundles_dir`, or a bundle folder).

    Raises:
        FileNotFoundError: no ``configs/metadata.json`` there.
    """
    path = name if os.path.isdir(name) else os.path.join(bundles_dir(), name)
    if not os.path.isfile(os.path.join(path, "configs", "metadata.json")):
        raise FileNotFoundError(f"no bundle {name!r} (looked in {path}); `monai-contrastive list` shows the bundles.")
    return path


def list_bundles() -> list[dict]:
    """``[{"name", "task", "version"}]`` of the bundles in :func:`bundles_dir`, by name."""
    root = bundles_dir()
    out = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        meta = os.path.join(root, name, "configs", "metadata.json")
        if os.path.isfile(meta):
            with open(meta) as f:
                m = json.load(f)
            out.append({"name": name, "task": m.get("task", ""), "version": m.get("version", "")})
    return out


# --------------------------------------------------------------------------------------------------- declarations


def _read_json(path: str) -> dict:
    with open(path) as f:
        content = json.load(f)
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(content).__name__}.")
    return content


def _config_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}: expected a non-empty list of config file names, got {value!r}.")
    return list(value)


def bundle_commands(name: str) -> dict:
    """The bundle's ``configs/commands.json`` (see the module docstring); ``{}`` when it has none.

    Raises:
        ValueError: the file is not a JSON object of the known sections (the message names the file).
    """
    root = name if os.path.isdir(name) else bundle_path(name)
    path = os.path.join(root, "configs", COMMANDS_FILE)
    if not os.path.isfile(path):
        return {}
    commands = _read_json(path)
    unknown = sorted(k for k in commands if k not in _SECTIONS and not k.startswith("_"))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; known: {list(_SECTIONS)}.")
    for section in _SECTIONS:
        if not isinstance(commands.get(section, {}), Mapping):
            raise ValueError(f"{path}: {section!r} must be an object, got {commands[section]!r}.")
    return commands


def _demo_section(name: str) -> tuple[dict, dict, str]:
    """(commands.json's demo section, the demo config's content, the demo config's path)."""
    section = dict(bundle_commands(name).get("demo", {}))
    configs = _config_list(section.get("configs", _DEFAULT_DEMO), f"{name}: {COMMANDS_FILE} demo.configs")
    path = os.path.join(bundle_path(name), "configs", configs[-1])
    demo_cfg = _read_json(path) if os.path.isfile(path) else {}
    return section, demo_cfg, path


def demo_configs(name: str) -> list[str]:
    """The configs ``monai-contrastive demo NAME`` runs when the bundle declares no stages."""
    section = bundle_commands(name).get("demo", {})
    return _config_list(section.get("configs", _DEFAULT_DEMO), f"{name}: {COMMANDS_FILE} demo.configs")


def demo_stages(name: str) -> list[dict]:
    """The demo's stages, ``[{"title": ..., "configs": [...], "overrides": {...}}]``; empty for a one-run demo.

    Raises:
        ValueError: a stage without a ``configs`` list (the message names the file and the stage).
    """
    section, demo_cfg, demo_path = _demo_section(name)
    if "stages" in section:
        stages, where = section["stages"] or [], os.path.join(bundle_path(name), "configs", COMMANDS_FILE)
    else:
        stages, where = demo_cfg.get("demo_stages") or [], demo_path
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict) or not stage.get("configs"):
            raise ValueError(f"{where}: demo stage {i} needs a 'configs' list, got {stage!r}.")
    return stages


def demo_inference_overrides(name: str) -> dict:
    """What ``inference.json`` needs to serve a model trained by ``demo``: the declared ``inference_overrides`` (the
    demo's backbone where ``inference.json`` nests it differently, e.g. in a fold ensemble) and every key of the
    demo config that ``inference.json`` also has (image size, clip length, demo data). Empty for a bundle without a
    demo config."""
    section, demo_cfg, _ = _demo_section(name)
    if not demo_cfg:
        return {}
    infer_cfg = _read_json(os.path.join(bundle_path(name), "configs", "inference.json"))
    overrides = dict(section.get("inference_overrides", demo_cfg.get("inference_overrides", {})))
    for key, value in demo_cfg.items():
        if key in infer_cfg:
            overrides.setdefault(key, value)
    return overrides


def pretrain_methods(name: str) -> dict[str, list[str]]:
    """``{method: configs}`` of the bundle's pretraining; ``{"": ["pretrain.json"]}`` for a bundle that declares
    none but has ``configs/pretrain.json``; ``{}`` for a bundle without pretraining."""
    section = bundle_commands(name).get("pretrain", {})
    methods = section.get("methods")
    if methods is None:
        single = os.path.isfile(os.path.join(bundle_path(name), "configs", "pretrain.json"))
        return {"": ["pretrain.json"]} if single else {}
    if not isinstance(methods, Mapping) or not methods:
        raise ValueError(f"{name}: {COMMANDS_FILE} pretrain.methods must be a non-empty object, got {methods!r}.")
    return {m: _config_list(c, f"{name}: {COMMANDS_FILE} pretrain.methods.{m}") for m, c in methods.items()}


def pretrain_configs(name: str, method: str | None = None, demo: bool = False) -> list[str]:
    """The configs of ``monai-contrastive pretrain NAME [--method M] [--demo]``, merged in order.

    Raises:
        ValueError: the bundle has no pretraining, or no method ``method`` (the message lists its methods).
    """
    section = bundle_commands(name).get("pretrain", {})
    methods = pretrain_methods(name)
    if not methods:
        raise ValueError(f"bundle {name!r} declares no pretraining ({COMMANDS_FILE} 'pretrain', or pretrain.json).")
    if method is None or method == "":
        method = section.get("default_method", next(iter(methods)) if len(methods) == 1 else None)
        if method is None:
            raise ValueError(f"bundle {name!r} has several pretraining methods {sorted(methods)}: give --method.")
    if method not in methods:
        if list(methods) == [""]:
            raise ValueError(f"bundle {name!r} has one pretraining (pretrain.json), no method {method!r}.")
        raise ValueError(f"bundle {name!r} has no pretraining method {method!r}; its methods: {sorted(methods)}.")
    configs = list(methods[method])
    if demo:
        if "demo_configs" not in section:
            raise ValueError(f"bundle {name!r} declares no demo pretraining ({COMMANDS_FILE} pretrain.demo_configs).")
        configs += _config_list(section["demo_configs"], f"{name}: {COMMANDS_FILE} pretrain.demo_configs")
    return configs


@dataclass(frozen=True)
class CheckpointLayout:
    """Where a bundle's trained weights are (``configs/commands.json``'s ``checkpoints`` section).

    Attributes:
        checkpoint_key: the checkpoint entry holding the state dict (a plain state dict is taken as it is).
        served: the served model, relative to the bundle (``models/model.pt``).
        fold_checkpoints: where training writes fold ``{fold}``'s model, relative to the bundle; None for a bundle
            that serves one model.
        num_folds_key: the ``inference.json`` key that ``export`` sets to the number of exported folds.
        extra_models: other weights the served pipeline loads, ``{path relative to the bundle: inference.json id of
            the network they load into}`` (e.g. DCC-CL's coarse stage, ``{"models/coarse.pt": "coarse_def"}``);
            ``export`` checks each loads strictly and ships it beside ``models/model.pt``.
        export_overrides: config values ``export`` writes into the exported configs, ``{config file: {key: value}}``,
            for defaults that need a file the exported bundle does not ship (e.g. DCC-CL's ``train.json`` ``init``
            ``"dcc"`` loads ``models/pretrained_dcc.pt``: exported, ``{"train.json": {"init": "none"}}``, and MONAI
            Label's ``/train`` starts from the served ``models/model.pt``).
    """

    checkpoint_key: str = "model"
    served: str = "models/model.pt"
    fold_checkpoints: str | None = None
    num_folds_key: str = "num_folds"
    extra_models: dict = field(default_factory=dict)
    export_overrides: dict = field(default_factory=dict)

    @property
    def has_folds(self) -> bool:
        return self.fold_checkpoints is not None


def checkpoint_layout(name: str) -> CheckpointLayout:
    """The bundle's :class:`CheckpointLayout`.

    Raises:
        ValueError: unknown keys, or a ``fold_checkpoints`` pattern without ``{fold}`` (the message names them).
    """
    section = dict(bundle_commands(name).get("checkpoints", {}))
    known = {"checkpoint_key", "served", "fold_checkpoints", "num_folds_key", "extra_models", "export_overrides"}
    unknown = sorted(k for k in section if k not in known and not k.startswith("_"))
    if unknown:
        raise ValueError(f"{name}: {COMMANDS_FILE} checkpoints has unknown key(s) {unknown}; known: {sorted(known)}.")
    pattern = section.get("fold_checkpoints")
    if pattern is not None and "{fold}" not in pattern:
        raise ValueError(
            f"{name}: {COMMANDS_FILE} checkpoints.fold_checkpoints must contain '{{fold}}', got {pattern!r}."
        )
    extra = section.get("extra_models", {})
    if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise ValueError(
            f"{name}: {COMMANDS_FILE} checkpoints.extra_models must map weight files to inference.json network ids, "
            f"got {extra!r}."
        )
    overrides = section.get("export_overrides", {})
    if not isinstance(overrides, dict) or not all(
        isinstance(k, str) and k.endswith(".json") and isinstance(v, dict) for k, v in overrides.items()
    ):
        raise ValueError(
            f"{name}: {COMMANDS_FILE} checkpoints.export_overrides must map config files to {{key: value}} objects, "
            f"got {overrides!r}."
        )
    return CheckpointLayout(**{k: v for k, v in section.items() if k in known})


def fold_checkpoints(bundle_dir: str, pattern: str) -> list[str]:
    """The fold models found under ``bundle_dir`` for ``pattern`` (e.g. ``models/fold{fold}/model.pt``), by fold."""
    prefix, _, suffix = pattern.partition("{fold}")
    regex = re.compile(re.escape(prefix) + r"(\d+)" + re.escape(suffix) + r"$")
    found = []
    for path in glob.glob(os.path.join(glob.escape(bundle_dir), glob.escape(prefix) + "*" + glob.escape(suffix))):
        m = regex.fullmatch(os.path.relpath(path, bundle_dir).replace(os.sep, "/"))
        if m and os.path.isfile(path):
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]

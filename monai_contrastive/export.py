"""Export a trained bundle as a self-contained, model-zoo-ready bundle folder.

``monai-contrastive export NAME --out DIR`` writes ``DIR/NAME/``:

- ``configs/``: the bundle's configs with the plugin's ``_target_`` paths and imports pointing at ``scripts.``
  (``$import scripts.monai_contrastive as monai_contrastive`` keeps the configs' expressions as they are); for a
  bundle serving a fold ensemble, the ``inference.json`` key its ``configs/commands.json`` names (``num_folds``)
  set to the number of exported fold models;
- ``scripts/monai_contrastive/``: the plugin code the configs use (the package without its command line, bundle
  registry, figure and export modules), its absolute imports rewritten to ``scripts.monai_contrastive`` so that it
  never mixes with an installed plugin;
- ``models/model.pt``: the served network's plain state dict (the fold ensemble's for a bundle with folds: member
  ``k`` under ``models.<k>.``), loadable with no ``key_in_ckpt``; ``models/model.ts``: the scripted network
  (``torch.jit.script``, with the metadata and inference config inside, as ``ckpt_export`` writes it);
- other weights the served pipeline loads (``extra_models`` in ``configs/commands.json``, e.g. DCC-CL's
  ``models/coarse.pt``), each checked against its network in ``inference.json`` and saved as a plain state dict;
- ``large_files.yml``: the weights (over the model zoo's 25 MB per file) with URL and MD5, for the zoo to host;
- ``configs/metadata.json``: the 20240725 schema, ``required_packages_version`` listing only installable packages
  (what the copied code imports at module level, plus the readers the bundle lists), with the versions installed
  here;
- ``docs/``, ``LICENSE`` as in the bundle.

The model zoo runs a bundle from its folder (``python -m monai.bundle ...`` from the bundle root, or MONAI Label,
which puts the bundle on ``sys.path``), so ``scripts`` is importable there.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from importlib import metadata as importlib_metadata

from monai_contrastive.bundles import (
    CheckpointLayout,
    bundle_path,
    checkpoint_layout,
    demo_inference_overrides,
    fold_checkpoints,
)
from monai_contrastive.io import read_state_dict

__all__ = [
    "ZOO_MAX_FILE_MB",
    "SCHEMA_URL",
    "export_bundle",
    "rewrite_config",
    "required_packages",
    "read_large_files",
    "zoo_file_sizes",
]

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
ZOO_MAX_FILE_MB = 25.0
DEFAULT_WEIGHTS_URL = "https://github.com/Project-MONAI/model-zoo/releases/download/hosting_storage_v1"

_PACKAGE = "monai_contrastive"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# not needed by any bundle config: the command line and its bundle registry, figures (matplotlib/scipy), this module,
# the MONAI Label app
_SKIP_MODULES = ("cli.py", "visualize.py", "export.py", "bundles.py")
_SKIP_DIRS = ("_bundles", "apps", "__pycache__")
_SKIP_BUNDLE = ("models", "eval", "runs", "demo_data", ".cache", "__pycache__", "scripts", "large_files.yml")
# covered by the metadata's own keys (monai_version, pytorch_version, numpy_version)
_OWN_KEYS = {"monai": "monai_version", "torch": "pytorch_version", "numpy": "numpy_version"}
_NAME_RE = re.compile(r"(?<![\w.\-/])" + _PACKAGE + r"(?![\w\-])")


# --------------------------------------------------------------------------------------------------- code


def _rewrite_code(text: str) -> str:
    return _NAME_RE.sub("scripts." + _PACKAGE, text)


def copy_plugin(scripts_dir: str) -> list[str]:
    """Copy the plugin package to ``scripts_dir/monai_contrastive`` with its imports rewritten; return the files."""
    dst_root = os.path.join(scripts_dir, _PACKAGE)
    written = []
    for root, dirs, files in os.walk(_PACKAGE_DIR):
        rel = os.path.relpath(root, _PACKAGE_DIR)
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for f in sorted(files):
            if not f.endswith(".py") or (rel == "." and f in _SKIP_MODULES):
                continue
            dst = os.path.normpath(os.path.join(dst_root, rel, f))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(os.path.join(root, f)) as fh:
                text = fh.read()
            with open(dst, "w") as fh:
                fh.write(_rewrite_code(text))
            written.append(dst)
    with open(os.path.join(scripts_dir, "__init__.py"), "w") as fh:
        fh.write('"""Code of this bundle: a copy of the monai-contrastive plugin (the parts its configs use)."""\n')
    return written


def _module_level_imports(path: str) -> set[str]:
    """Top-level names of the modules ``path`` imports when it is imported (not inside functions)."""
    with open(path) as fh:
        tree = ast.parse(fh.read(), filename=path)
    names: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif isinstance(node, (ast.If, ast.Try)):
                # ``if TYPE_CHECKING`` blocks are not run
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    continue
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)

    visit(tree.body)
    return names


def _distribution_version(dist: str) -> str:
    return importlib_metadata.version(dist)


def required_packages(code_files: Sequence[str], listed: dict | None = None) -> dict[str, str]:
    """``{distribution: version}`` for the third-party modules ``code_files`` import at module level, plus ``listed``
    (the bundle's own list, e.g. image readers imported on demand) and ``fire`` (for ``python -m monai.bundle``),
    without the plugin itself and the packages the metadata has keys for (monai, torch, numpy); versions are those
    installed here."""
    top = set()
    for f in code_files:
        top |= _module_level_imports(f)
    top -= set(sys.stdlib_module_names) | {"scripts", _PACKAGE, "__future__"}
    mapping = importlib_metadata.packages_distributions()
    out: dict[str, str] = {}
    for name in sorted(top):
        if name in _OWN_KEYS:
            continue
        dists = mapping.get(name)
        if not dists:
            raise RuntimeError(f"the exported code imports {name!r}, which no installed distribution provides.")
        dist = dists[0]
        out[dist.lower()] = _distribution_version(dist)
    for dist in listed or {}:
        if dist.lower().replace("_", "-") in ("monai-contrastive",) or dist in _OWN_KEYS:
            continue
        out[dist.lower()] = _distribution_version(dist)
    out["fire"] = _distribution_version("fire")  # ``python -m monai.bundle ...`` needs it (MONAI's optional dependency)
    for own in ("monai", "torch", "numpy"):
        out.pop(own, None)
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------------- configs


def _rewrite_import(text: str) -> str:
    body = text[1:].strip()
    if body == f"import {_PACKAGE}":
        return f"$import scripts.{_PACKAGE} as {_PACKAGE}"
    return "$" + _rewrite_code(body)


def rewrite_config(config):
    """A config (dict/list/str tree) with the plugin referenced under ``scripts.``: ``_target_`` paths and the
    ``imports`` list rewritten; expressions keep ``monai_contrastive.x`` (the package is imported under that name)."""
    if isinstance(config, dict):
        out = {}
        for k, v in config.items():
            if k == "_target_" and isinstance(v, str) and v.startswith(_PACKAGE + "."):
                out[k] = "scripts." + v
            elif k == "imports" and isinstance(v, list):
                out[k] = [_rewrite_import(x) if isinstance(x, str) and x.startswith("$") else x for x in v]
                if any(_PACKAGE in json.dumps(x) for x in out[k]) and (
                    f"$import scripts.{_PACKAGE} as {_PACKAGE}" not in out[k]
                ):
                    out[k].append(f"$import scripts.{_PACKAGE} as {_PACKAGE}")
            else:
                out[k] = rewrite_config(v)
        return out
    if isinstance(config, list):
        return [rewrite_config(v) for v in config]
    if (
        isinstance(config, str)
        and config.startswith("$import ")
        or isinstance(config, str)
        and (config.startswith("$from "))
    ):
        return _rewrite_import(config)
    return config


# --------------------------------------------------------------------------------------------------- weights


def _md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_large_files(bundle_dir: str, files: Sequence[str], base_url: str, name: str, version: str) -> str:
    """Write ``large_files.yml`` (model-zoo format) for ``files`` (paths relative to ``bundle_dir``)."""
    lines = ["large_files:"]
    for rel in files:
        url = f"{base_url.rstrip('/')}/{name}_v{version}_{os.path.basename(rel)}"
        lines += [
            f'  - path: "{rel}"',
            f'    url: "{url}"',
            f'    hash_val: "{_md5(os.path.join(bundle_dir, rel))}"',
            '    hash_type: "md5"',
        ]
    path = os.path.join(bundle_dir, "large_files.yml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def read_large_files(path: str) -> list[dict]:
    """Parse the ``large_files.yml`` that :func:`write_large_files` writes (a list of flat string mappings)."""
    entries: list[dict] = []
    with open(path) as f:
        for line in f:
            s = line.strip()
            if not s or s == "large_files:":
                continue
            if s.startswith("- "):
                entries.append({})
                s = s[2:]
            key, _, value = s.partition(":")
            entries[-1][key.strip()] = value.strip().strip('"')
    return entries


def zoo_file_sizes(bundle_dir: str) -> dict[str, float]:
    """Size in MB of every file of ``bundle_dir`` that a zoo pull request would carry (not in ``large_files.yml``)."""
    hosted = set()
    lf = os.path.join(bundle_dir, "large_files.yml")
    if os.path.isfile(lf):
        hosted = {e["path"] for e in read_large_files(lf)}
    sizes = {}
    for root, dirs, files in os.walk(bundle_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), bundle_dir)
            if rel not in hosted:
                sizes[rel] = os.path.getsize(os.path.join(root, f)) / 2**20
    return sizes


# --------------------------------------------------------------------------------------------------- export


def _parse_exported(bundle_dir: str, config: str = "inference.json", **overrides):
    """A ConfigParser of the exported bundle, with its ``scripts`` importable (the caller unloads it after)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_dir, "configs", config))
    parser.read_meta(os.path.join(bundle_dir, "configs", "metadata.json"))
    parser["bundle_root"] = bundle_dir
    for k, v in overrides.items():
        parser[k] = v
    return parser


def _unload_scripts() -> None:
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[name]


def _weights_to_export(src: str, ckpt: str | Sequence[str] | None, settings: CheckpointLayout) -> list[str]:
    """The checkpoint files to export: ``ckpt`` if given, else the served model, else the fold models found."""
    if ckpt is None:
        served = os.path.join(src, settings.served)
        if os.path.isfile(served):
            ckpts = [served]
        else:
            ckpts = fold_checkpoints(src, settings.fold_checkpoints) if settings.has_folds else []
    else:
        ckpts = [ckpt] if isinstance(ckpt, str) else list(ckpt)
    if not ckpts:
        raise FileNotFoundError(f"no trained weights in {os.path.join(src, 'models')}; train the bundle first.")
    missing = [p for p in ckpts if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"checkpoints not found: {missing}")
    if len(ckpts) > 1 and not settings.has_folds:
        raise ValueError(f"{os.path.basename(src)} serves one model, got {len(ckpts)} checkpoints: {ckpts}")
    return ckpts


def _number_of_folds(states: list[dict], settings: CheckpointLayout) -> int | None:
    """The folds the exported ensemble holds: one per checkpoint, or the members of one ensemble state dict."""
    if not settings.has_folds:
        return None
    if _is_ensemble_state(states):
        return len({k.split(".")[1] for k in states[0] if k.startswith("models.")})
    return len(states)


def _is_ensemble_state(states: list[dict]) -> bool:
    """One state dict of a whole fold ensemble (member ``k`` under ``models.<k>.``), as an earlier export writes."""
    return len(states) == 1 and any(k.startswith("models.") for k in states[0])


def _write_configs(src: str, dst: str, demo: bool, num_folds: int | None, settings: CheckpointLayout) -> None:
    """The bundle's configs, rewritten to use ``scripts.``; inference.json with the demo's settings (``demo``) and the
    number of exported folds; the values of ``checkpoints.export_overrides``."""
    from monai.bundle import ConfigParser

    for fname in sorted(os.listdir(os.path.join(dst, "configs"))):
        if not fname.endswith(".json") or fname == "metadata.json":
            continue
        path = os.path.join(dst, "configs", fname)
        with open(path) as f:
            config = json.load(f)
        if fname == "inference.json" and demo:
            demo_parser = ConfigParser(config)
            for key, value in demo_inference_overrides(src).items():
                demo_parser[key] = value
            config = demo_parser.get()
        config = rewrite_config(config)
        if fname == "inference.json" and num_folds is not None:
            config[settings.num_folds_key] = num_folds  # the exported models/model.pt is the ensemble of these folds
        for key, value in settings.export_overrides.get(fname, {}).items():
            if key not in config:
                raise ValueError(f"checkpoints.export_overrides names {key!r}, which {fname} does not define.")
            config[key] = value  # a default that needs a file the exported bundle does not ship
        with open(path, "w") as f:
            json.dump(config, f, indent=4)
            f.write("\n")


def _write_metadata(src: str, dst: str, code: list[str], demo: bool) -> dict:
    """The exported metadata.json: the 20240725 schema, the installable packages the copied code needs; returned."""
    with open(os.path.join(src, "configs", "metadata.json")) as f:
        meta = json.load(f)
    exported_meta = copy.deepcopy(meta)
    exported_meta["schema"] = SCHEMA_URL
    if demo:
        exported_meta["description"] = (
            exported_meta.get("description", "").rstrip() + " Exported from a demo run (small demo backbone trained on"
            " the synthetic demo data): a pipeline check, not a model for real images."
        )
    exported_meta["required_packages_version"] = required_packages(code, meta.get("required_packages_version"))
    bad = {k: v for k, v in exported_meta.get("eval_metrics", {}).items() if not isinstance(v, (int, float))}
    if bad:
        raise ValueError(f"metadata eval_metrics must be numbers, got {bad}")
    with open(os.path.join(dst, "configs", "metadata.json"), "w") as f:
        json.dump(exported_meta, f, indent=4)
        f.write("\n")
    return exported_meta


def _write_weights(
    dst: str, bundle_name: str, states: list[dict], per_member: bool, ckpts: list[str], torchscript: bool, demo: bool
) -> list[str]:
    """``models/model.pt`` (the served network's plain state dict, checked by loading it strictly into the exported
    ``network_def``; ``per_member``: ``states`` are the fold ensemble's members, in order) and ``models/model.ts``;
    returns the written files relative to ``dst``."""
    import torch

    os.makedirs(os.path.join(dst, "models"), exist_ok=True)
    sys.path.insert(0, dst)
    _unload_scripts()
    try:
        parser = _parse_exported(dst)
        net = parser.get_parsed_content("network_def")
        try:
            if per_member:
                for member, state in zip(net.models, states):
                    member.load_state_dict(state)
            else:
                net.load_state_dict(states[0])
        except RuntimeError as e:
            hint = "" if demo else " If they were trained by `monai-contrastive demo`, export with --demo True."
            raise RuntimeError(
                f"the weights {ckpts} do not fit network_def of {bundle_name}'s inference.json.{hint}\n{e}"
            ) from e
        torch.save(net.state_dict(), os.path.join(dst, "models", "model.pt"))
        written = ["models/model.pt"]
        if torchscript:
            from monai.data import save_net_with_metadata
            from monai.networks.utils import convert_to_torchscript

            net.eval()
            extra = {"inference.json": json.dumps(parser.get()).encode()}
            save_net_with_metadata(
                convert_to_torchscript(net),
                os.path.join(dst, "models", "model"),
                meta_values=parser.get().get("_meta_"),
                more_extra_files=extra,
                append_timestamp=False,
            )
            written.append("models/model.ts")
    finally:
        sys.path.remove(dst)
        _unload_scripts()
    return written


def _write_extra_models(src: str, dst: str, bundle_name: str, extra: dict, checkpoint_key: str) -> list[str]:
    """The other weights the served pipeline loads (``extra_models`` of the bundle's ``configs/commands.json``), each
    checked by loading it strictly into its network of the exported ``inference.json`` and written as a plain state
    dict at the same path; returns the written files relative to ``dst``."""
    import torch

    written = []
    sys.path.insert(0, dst)
    _unload_scripts()
    try:
        parser = _parse_exported(dst)
        for rel, network_id in extra.items():
            path = os.path.join(src, rel)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{bundle_name} serves {rel} ({network_id} of inference.json) beside its model, but {path} does "
                    "not exist: train that stage first."
                )
            state = read_state_dict(path, checkpoint_key, key_optional=True, what=f"{network_id} checkpoint")
            net = parser.get_parsed_content(network_id)
            try:
                net.load_state_dict(state)
            except RuntimeError as e:
                raise RuntimeError(f"{path} does not fit {network_id} of {bundle_name}'s inference.json.\n{e}") from e
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            torch.save(net.state_dict(), os.path.join(dst, rel))
            written.append(rel.replace(os.sep, "/"))
    finally:
        sys.path.remove(dst)
        _unload_scripts()
    return written


def _check_zoo_sizes(dst: str) -> None:
    too_big = {k: round(v, 1) for k, v in zoo_file_sizes(dst).items() if v > ZOO_MAX_FILE_MB}
    if too_big:
        raise RuntimeError(f"files over the zoo's {ZOO_MAX_FILE_MB} MB not listed in large_files.yml: {too_big}")


def export_bundle(
    name: str,
    out: str,
    ckpt: str | Sequence[str] | None = None,
    weights_url: str = DEFAULT_WEIGHTS_URL,
    torchscript: bool = True,
    overwrite: bool = False,
    demo: bool = False,
) -> str:
    """Write the model-zoo-ready copy of bundle ``name`` (a name or a bundle folder) to ``out/<bundle name>``.

    Args:
        name: the bundle (``monai-contrastive list``) or its folder.
        out: the folder to write the exported bundle into.
        ckpt: the trained weights: one checkpoint (``{"model": state_dict}`` or a plain state dict), or one per
            fold for a fold ensemble. Default: the bundle's served model (``models/model.pt``) when it exists, else
            the fold models its ``configs/commands.json`` declares (every fold found).
        weights_url: where the zoo will host the weights (``large_files.yml`` URLs are ``<weights_url>/<name>_v<
            version>_<file>``).
        torchscript: also write ``models/model.ts`` (``torch.jit.script`` of ``network_def``).
        overwrite: replace an existing export.
        demo: the weights come from ``monai-contrastive demo`` (a small demo backbone, demo input size): write the
            demo's network and input settings (:func:`monai_contrastive.bundles.demo_inference_overrides`) into the
            exported inference.json, and say so in its metadata.

    Returns:
        the exported bundle folder.
    """
    src = os.path.abspath(bundle_path(name))
    bundle_name = os.path.basename(os.path.normpath(src))
    final = os.path.abspath(os.path.join(out, bundle_name))
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} exists; pass --overwrite True to replace it.")
    settings = checkpoint_layout(src)
    ckpts = _weights_to_export(src, ckpt, settings)
    # written beside the target and renamed at the end: a failed export leaves no half-written bundle (and keeps an
    # earlier export it was to overwrite)
    dst = f"{final}.partial-{os.getpid()}"
    if os.path.exists(dst):
        shutil.rmtree(dst)
    try:
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*_SKIP_BUNDLE))
        code = copy_plugin(os.path.join(dst, "scripts"))
        states = [read_state_dict(p, settings.checkpoint_key, key_optional=True, what="checkpoint") for p in ckpts]
        num_folds = _number_of_folds(states, settings)
        _write_configs(src, dst, demo, num_folds, settings)
        exported_meta = _write_metadata(src, dst, code, demo)
        per_member = settings.has_folds and not _is_ensemble_state(states)
        large = _write_weights(dst, bundle_name, states, per_member, ckpts, torchscript, demo)
        extra = _write_extra_models(src, dst, bundle_name, settings.extra_models, settings.checkpoint_key)
        large += extra
        write_large_files(dst, large, weights_url, bundle_name, exported_meta.get("version", "0.0.0"))
        _check_zoo_sizes(dst)
    except BaseException:
        shutil.rmtree(dst, ignore_errors=True)
        raise
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(dst, final)
    print(
        f"exported {bundle_name} to {final}: models/model.pt (from {len(ckpts)} checkpoint(s)"
        + (f", {num_folds} fold models" if num_folds else "")
        + ")"
        + (", models/model.ts" if torchscript else "")
        + "".join(f", {e}" for e in extra)
        + f", {len(code)} plugin modules under scripts/, required packages "
        + ", ".join(f"{k}=={v}" for k, v in exported_meta["required_packages_version"].items())
    )
    return final

"""Loading a bundle's served weights (``models/model.pt``) into its inference network, with an error a person can
act on when they were trained with another network (e.g. the demo's smaller backbone)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from monai_contrastive.io import read_state_dict

__all__ = ["load_bundle_weights", "weights_mismatch"]


def _read_state(path: str, key: str | None) -> Mapping[str, torch.Tensor]:
    return read_state_dict(path, key, key_optional=True, what="served model")


def _values(tensors) -> int:
    return sum(int(t.numel()) for t in tensors if isinstance(t, torch.Tensor))


def weights_mismatch(network: nn.Module, state: Mapping[str, torch.Tensor], limit: int = 3) -> str:
    """What differs between ``state`` and ``network``'s state dict, in one sentence: tensors of another shape, keys
    missing or unexpected (the first ``limit`` of each), and the size of each. Empty when they match."""
    own = network.state_dict()
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if not (shapes or missing or unexpected):
        return ""
    parts = []
    if shapes:
        shown = "; ".join(
            f"{k}: checkpoint {tuple(state[k].shape)}, network {tuple(own[k].shape)}" for k in shapes[:limit]
        )
        parts.append(f"{len(shapes)} tensor(s) of another shape ({shown}{'; ...' if len(shapes) > limit else ''})")
    if missing:
        parts.append(f"{len(missing)} missing from the checkpoint (e.g. {', '.join(missing[:limit])})")
    if unexpected:
        parts.append(f"{len(unexpected)} not in the network (e.g. {', '.join(unexpected[:limit])})")
    sizes = (
        f"the checkpoint holds {_values(state.values()):,} values in {len(state)} tensors, the network "
        f"{_values(own.values()):,} in {len(own)}"
    )
    return "; ".join(parts) + f" ({sizes})"


def _saved_with(path: str) -> str:
    """What the model's side files say about its training run (epoch, selection metric), or ``""``."""
    info = {}
    if os.path.isfile(path + ".json"):
        try:
            with open(path + ".json") as f:
                info = json.load(f)
        except (OSError, ValueError):
            info = {}
    epoch = info.get("epoch")
    metric = f", {info['metric_name']} {info['metric']:.4g}" if "metric_name" in info and "metric" in info else ""
    return f" It was saved at epoch {epoch}{metric}." if epoch is not None else ""


def load_bundle_weights(
    network: nn.Module,
    path: str,
    key: str | None = "model",
    member_paths: Sequence[str] | None = None,
    bundle_root: str | None = None,
) -> nn.Module:
    """Load a bundle's served model into its inference ``network`` (strictly) and return the network.

    Args:
        network: the instantiated ``network_def`` of the bundle's ``inference.json``.
        path: the served model, e.g. ``<bundle>/models/model.pt`` (a plain state dict or one under ``key``).
        key: the checkpoint entry holding the state dict, when ``path`` holds more than that.
        member_paths: for a fold ensemble (:class:`~monai_contrastive.networks.FoldEnsemble`), the per-fold models
            used when ``path`` does not exist.
        bundle_root: the bundle folder, to name the bundle and its commands in an error.

    Raises:
        FileNotFoundError: no weights at ``path`` (nor every member path of an ensemble).
        RuntimeError: the weights do not fit ``network``: the message says what differs, what the checkpoint holds
            and what to run for a model trained by ``monai-contrastive demo`` (the demo's smaller backbone).
    """
    members = getattr(network, "models", None)
    ensemble = callable(getattr(network, "load_weights", None)) and members is not None
    if not ensemble and not os.path.isfile(path):
        raise FileNotFoundError(f"no weights at {path!r}: train the bundle first, or put the served model there.")
    try:
        if ensemble:
            network.load_weights(path, member_paths, key=key)
        else:
            network.load_state_dict(_read_state(path, key))
        return network
    except RuntimeError:
        pairs = list(zip(member_paths or [], members)) if ensemble and not os.path.isfile(path or "") else []
        for source, target in pairs or [(path, network)]:
            diff = weights_mismatch(target, _read_state(source, key))
            if diff:
                break
        diff = diff or "the tensors do not load"
    root = os.path.abspath(bundle_root) if bundle_root else None
    name = os.path.basename(root) if root else "<bundle>"
    message = (
        f"the weights {source!r} do not fit network_def of {name}'s inference.json: {diff}. They were trained with "
        f"another network configuration.{_saved_with(source)}"
    )
    if root is None or os.path.isfile(os.path.join(root, "configs", "demo.json")):
        message += (
            f" A model trained by `monai-contrastive demo {name}` has the demo's smaller backbone and input size: run "
            f"`monai-contrastive infer {name} --demo True`, or give `python -m monai.bundle run --config_file "
            "configs/inference.json` the demo's settings as overrides (the keys of configs/demo.json that "
            "inference.json also has, and demo.json's inference_overrides)."
        )
    message += " Otherwise set network_def to the network the model was trained with."
    raise RuntimeError(message) from None

"""Loading pretrained weights from local files (never downloaded) into a network or a part of it."""

from __future__ import annotations

import logging
import os

from monai.networks.utils import copy_model_state
from torch import nn

from monai_contrastive.io import read_state_dict

__all__ = ["PRETRAINED_INITS", "load_pretrained_weights", "pretrained_branch_weights"]

logger = logging.getLogger(__name__)


def load_pretrained_weights(
    module: nn.Module,
    path: str | None,
    key: str | None = None,
    prefix: str = "",
    dst_prefix: str = "",
    exclude_vars: str | None = None,
) -> nn.Module:
    """Copy the matching tensors of a local weights file into ``module`` (MONAI ``copy_model_state``); return it.

    Tensors are matched by name and shape; the others stay as initialised, and the counts are logged. Used for a
    pretrained backbone (Kinetics R(2+1)D, ImageNet EfficientNet) and for the pretrained parts of a fine-tuned
    model (e.g. the global branch from a MoCo checkpoint, the local branch from an LRC one).

    Args:
        module: the network (or sub-module) to load into.
        path: a ``.pt``/``.pth`` state dict, or a checkpoint dict holding one under ``key``; None/"" does nothing.
        key: the entry of the checkpoint holding the state dict, e.g. ``"model"`` or ``"state_dict"``.
        prefix: only the source tensors whose names start with this are used, with it stripped (``"module."``,
            ``"encoder."``).
        dst_prefix: prepended to the (stripped) source names to find them in ``module``.
        exclude_vars: a regular expression of ``module``'s tensor names to leave untouched (e.g. a new head).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        KeyError: ``key`` is not in the file.
        ValueError: no tensor of the file matches ``module``.
    """
    if not path:
        return module
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights not found: {path!r} (weights are never downloaded).")
    state = read_state_dict(path, key, prefix=prefix, what="pretrained weights")
    _, updated, unchanged = copy_model_state(module, state, dst_prefix=dst_prefix, exclude_vars=exclude_vars)
    if not updated:
        raise ValueError(
            f"no tensor of {path!r} matches {type(module).__name__} (first source keys: {sorted(state)[:5]}, "
            f"first target keys: {sorted(module.state_dict())[:5]})."
        )
    logger.info(f"loaded {len(updated)} tensors from {path}; {len(unchanged)} left as initialised")
    return module


PRETRAINED_INITS = {"random": (False, False), "moco": (True, False), "lrc": (False, True), "lrc_moco": (True, True)}


def pretrained_branch_weights(
    init: str,
    pretrain_dir: str,
    global_file: str = "pretrain_moco/model.pt",
    local_file: str = "pretrain_lrc/model.pt",
    global_missing_hint: str = "run the pretraining that writes it first.",
    local_missing_hint: str = "run the pretraining that writes it first.",
) -> tuple[str, str]:
    """The weights files of the two branches of the LRC fine-tuning network for one of Table 4.2's rows.

    Args:
        init: ``"random"``, ``"moco"`` (global branch from MoCo), ``"lrc"`` (local branch from LRC) or
            ``"lrc_moco"`` (both).
        pretrain_dir: the folder holding the pretraining outputs (the bundle's ``models/``).
        global_file, local_file: the MoCo and LRC pretraining models, relative to ``pretrain_dir``.
        global_missing_hint, local_missing_hint: what to run when the file is missing (the bundle's config and
            command that write it), appended to the error.

    Returns: ``(global_weights, local_weights)``, ``""`` for a randomly initialised branch.

    Raises:
        ValueError: unknown ``init``.
        FileNotFoundError: a needed pretraining model is missing (the message ends with the hint).
    """
    if init not in PRETRAINED_INITS:
        raise ValueError(f"init must be one of {sorted(PRETRAINED_INITS)}, got {init!r}.")
    use_global, use_local = PRETRAINED_INITS[init]
    out = []
    for use, rel, hint in ((use_global, global_file, global_missing_hint), (use_local, local_file, local_missing_hint)):
        path = os.path.join(pretrain_dir, rel) if use else ""
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"init={init!r} needs {path!r}, which does not exist: {hint}")
        out.append(path)
    return out[0], out[1]

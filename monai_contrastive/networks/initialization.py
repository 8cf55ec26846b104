"""A randomly initialised twin of a network: the reference a pretrained model is compared with."""

from __future__ import annotations

import copy

import torch.nn as nn

__all__ = ["reinitialized_copy"]


def reinitialized_copy(network: nn.Module) -> nn.Module:
    """A deep copy of ``network`` with every parameter and buffer drawn afresh by its layers' own initialisation
    (``reset_parameters`` of every submodule that has one, in module order), i.e. the same architecture as built,
    untrained. Seed with ``torch.manual_seed`` first for a reproducible draw. ``network`` itself is not changed.

    Raises:
        ValueError: ``network`` has parameters but no submodule that can reset them.
    """
    twin = copy.deepcopy(network)
    resettable = [m for m in twin.modules() if callable(getattr(m, "reset_parameters", None))]
    if not resettable and any(True for _ in twin.parameters()):
        raise ValueError(f"{type(network).__name__}: no submodule has reset_parameters(); cannot re-initialise it.")
    for module in resettable:
        module.reset_parameters()
    return twin

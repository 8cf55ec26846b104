"""A weighted sum of named loss terms over the network's outputs and the batch (the loss contract of the trainer)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["LossTerm", "MultiTermLoss"]


def _lookup(name: str, outputs: Mapping, batch: Mapping, term: str) -> Any:
    if name in outputs:
        return outputs[name]
    if name in batch:
        return batch[name]
    raise KeyError(
        f"loss term {term!r} reads {name!r}, found neither in the network outputs {sorted(outputs)} nor in the batch "
        f"{sorted(batch)}."
    )


class LossTerm(nn.Module):
    """One weighted term ``weight * loss(*inputs)`` of a :class:`MultiTermLoss`.

    Args:
        loss: any callable returning a tensor (a MONAI/torch loss, a contrastive loss...) or ``(tensor, {sub: v})``.
        weight: the term's weight; 0 skips the term (it is not computed).
        inputs: the loss's positional arguments, each the name of a network output or a batch key (outputs first),
            or a pair ``[function, name]`` that passes ``function(value)`` (e.g. ``["@ecdf", "label"]`` for the
            ECDF values of the labels).
        views: keep only the rows of these view indices (``batch["view"]``) in every input, e.g. ``[0]`` to supervise
            the first view only; every input must then have one row per view row.
    """

    def __init__(
        self,
        loss: Callable,
        weight: float = 1.0,
        inputs: Sequence[str | Sequence] = ("pred", "label"),
        views: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.loss = loss
        self.weight = float(weight)
        self.inputs: list[tuple[Callable | None, str]] = []
        for spec in inputs:
            if isinstance(spec, str):
                self.inputs.append((None, spec))
            elif isinstance(spec, Sequence) and len(spec) == 2 and callable(spec[0]) and isinstance(spec[1], str):
                self.inputs.append((spec[0], spec[1]))
            else:
                raise ValueError(f"LossTerm input must be a name or a [function, name] pair, got {spec!r}.")
        # functions that are modules (an ECDF) are registered so that .to(device) and state dicts reach them
        self.input_modules = nn.ModuleList([f for f, _ in self.inputs if isinstance(f, nn.Module)])
        self.views = list(views) if views is not None else None

    def forward(self, outputs: Mapping, batch: Mapping, name: str = "term") -> Any:
        args = []
        for fn, key in self.inputs:
            value = _lookup(key, outputs, batch, name)
            args.append(fn(value) if fn is not None else value)
        if self.views is not None:
            if "view" not in batch:
                raise KeyError(f"loss term {name!r} selects views {self.views} but the batch has no 'view'.")
            view = batch["view"].reshape(-1)
            keep = torch.isin(view, torch.as_tensor(self.views, device=view.device))
            for i, a in enumerate(args):
                if not isinstance(a, torch.Tensor) or a.shape[0] != view.shape[0]:
                    raise ValueError(f"loss term {name!r}: input {self.inputs[i][1]!r} has no row per view row.")
            args = [a[keep] for a in args]
        return self.loss(*args)


class MultiTermLoss(nn.Module):
    """``total = sum_k w_k * L_k`` over named terms; returns ``(total, {k: L_k})`` (unweighted terms, for logging).

    Called by :class:`~monai_contrastive.engines.MultiViewTrainer` as ``loss(outputs, batch)``: ``outputs`` is the
    network's dict of named outputs (a plain tensor counts as ``{"pred": tensor}``), ``batch`` the laid-out batch of
    :class:`~monai_contrastive.engines.PrepareViewBatch`. Each term reads its inputs by name, so a config composes
    any method's objective, e.g. AdaCon (eq. 8) as ``{"reg": L1(pred, label), "con": AdaCon(embedding,
    ecdf(label), sample_id, label)}``, MoCo as ``{"moco": InfoNCE(query, key, queue)}``, fine-tuning as
    ``{"dice_ce": DiceCELoss(pred, label)}``. A term whose loss returns ``(value, {sub: v})`` contributes ``value``
    and logs its sub-terms as ``<term>_<sub>``.

    Args:
        terms: ``{name: LossTerm or a dict of LossTerm's arguments}``.
    """

    def __init__(self, terms: Mapping[str, LossTerm | Mapping[str, Any]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("MultiTermLoss needs at least one term.")
        built = {name: t if isinstance(t, LossTerm) else LossTerm(**t) for name, t in terms.items()}
        if all(t.weight == 0 for t in built.values()):
            raise ValueError(f"MultiTermLoss: every term has weight 0 ({sorted(built)}); nothing would be trained.")
        self.terms = nn.ModuleDict(built)

    def forward(self, outputs: Any, batch: Mapping) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not isinstance(outputs, Mapping):
            outputs = {"pred": outputs}
        total = None
        logged: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            if term.weight == 0:
                continue
            value = term(outputs, batch, name)
            if isinstance(value, tuple):
                value, subs = value
                logged.update({f"{name}_{k}": v for k, v in subs.items()})
            logged[name] = value
            total = term.weight * value if total is None else total + term.weight * value
        return total, logged

"""Whole networks: an encoder with named heads (the model contract of the trainer) and a fold ensemble."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from monai_contrastive.networks.heads import ProjectionHead, StandardizedRegressionHead
from monai_contrastive.networks.weights import load_pretrained_weights

__all__ = ["ContrastiveNet", "FoldEnsemble", "RegressionContrastiveNet", "remove_classifier"]


def remove_classifier(backbone: nn.Module, fc_name: str | None) -> nn.Module:
    """Replace the attribute ``fc_name`` (dotted) of ``backbone`` by the identity, so it returns features."""
    if not fc_name:
        return backbone
    parent = backbone
    *path, last = fc_name.split(".")
    for p in path:
        parent = getattr(parent, p)
    if not hasattr(parent, last):
        raise AttributeError(f"backbone {type(backbone).__name__} has no classifier {fc_name!r} to remove.")
    setattr(parent, last, nn.Identity())
    return backbone


class ContrastiveNet(nn.Module):
    """An encoder and named heads; ``forward`` returns a dict of named outputs.

    ``out = encoder(input_norm(x))``: a tensor counts as ``{"features": tensor}``, a dict is used as it is (e.g. a
    U-Net's ``{"features": bottleneck, "decoder": last decoder map}``). Each head ``name`` maps ``out[head_inputs
    .get(name, "features")]`` to ``out[name]``. With ``output_key`` the network returns that output alone and runs
    only what it needs (inference, ``verify_net_in_out``, TorchScript tracing).

    Examples: AdaCon (:class:`RegressionContrastiveNet`): heads ``pred`` (regression) and ``embedding``
    (:class:`~monai_contrastive.networks.ProjectionHead`); LRC: a U-Net encoder returning its last decoder map and a
    :class:`~monai_contrastive.networks.DenseProjectionHead` for pixel embeddings; MoCo: a pooled projection wrapped
    by :class:`~monai_contrastive.networks.MomentumContrastNet`.

    Args:
        encoder: module mapping the input to features (a tensor or a dict of tensors).
        heads: ``{name: module}``.
        head_inputs: ``{head name: encoder output it reads}`` (default ``"features"``).
        input_norm: a module applied to the input first, e.g. :class:`~monai_contrastive.networks.InputNormalization`.
        output_key: return only this output.

    Shapes: input ``(B, C, *spatial)``; outputs as the encoder and heads give them.
    """

    def __init__(
        self,
        encoder: nn.Module,
        heads: Mapping[str, nn.Module] | None = None,
        head_inputs: Mapping[str, str] | None = None,
        input_norm: nn.Module | None = None,
        output_key: str | None = None,
    ) -> None:
        super().__init__()
        self.input_norm = input_norm
        self.encoder = encoder
        self.heads = nn.ModuleDict(dict(heads or {}))
        self.head_inputs = dict(head_inputs or {})
        unknown = set(self.head_inputs) - set(self.heads)
        if unknown:
            raise ValueError(f"head_inputs names unknown heads {sorted(unknown)} (heads: {sorted(self.heads)}).")
        self.output_key = output_key

    def forward(self, x: torch.Tensor, **kwargs) -> dict[str, torch.Tensor] | torch.Tensor:
        if self.input_norm is not None:
            x = self.input_norm(x)
        feats = self.encoder(x, **kwargs)
        out = dict(feats) if isinstance(feats, Mapping) else {"features": feats}
        if self.output_key is not None and self.output_key in out:
            return out[self.output_key]
        for name, head in self.heads.items():
            if self.output_key is not None and name != self.output_key:
                continue
            src = self.head_inputs.get(name, "features")
            if src not in out:
                raise KeyError(f"head {name!r} reads {src!r}, which the encoder does not return ({sorted(out)}).")
            out[name] = head(out[src])
        if self.output_key is not None:
            if self.output_key not in out:
                raise KeyError(f"output_key {self.output_key!r} is not an output ({sorted(out)}).")
            return out[self.output_key]
        return out


class _Features(nn.Module):
    """A classification backbone without its classifier, returning ``(B, F)`` features."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        return torch.flatten(f, 1) if f.ndim > 2 else f


class RegressionContrastiveNet(ContrastiveNet):
    """A backbone with a regression head and a contrastive projection head (AdaCon Fig. 2): a :class:`ContrastiveNet`.

    ``forward`` returns ``{"features": (B, feature_dim), "pred": (B, out_channels), "embedding": (B, proj_dim)}``
    (unit-length embeddings); with ``output_key`` only that tensor.

    Args:
        backbone: any module mapping an image batch to features, e.g. MONAI ``EfficientNetBN`` (2D, 1 channel) or
            torchvision ``r2plus1d_18``; its classifier (attribute ``fc_name``) is replaced by the identity.
        feature_dim: size of the backbone features (1280 for EfficientNet-B1, 512 for R(2+1)D-18).
        out_channels: regression outputs.
        proj_hidden: hidden size of the projection head (default: ``feature_dim``).
        proj_dim: embedding size (128 in the paper).
        fc_name: dotted name of the backbone's classifier to remove ("_fc" for EfficientNetBN, "fc" for ResNets);
            None when the backbone already returns features.
        reg_bias_init: initial bias of the regression head in label units; ignored when ``target_mean`` is given.
        target_mean: mean of the training labels (see :class:`~monai_contrastive.networks.StandardizedRegressionHead`).
        target_std: standard deviation of the training labels.
        pretrained_path: local file with backbone weights (never downloaded), see
            :func:`~monai_contrastive.networks.load_pretrained_weights`.
        pretrained_key: entry of that file holding the state dict.
        pretrained_prefix: key prefix to strip from that state dict.
        output_key: return only this output.
        input_norm: a module applied to the input first.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        out_channels: int = 1,
        proj_hidden: int | None = None,
        proj_dim: int = 128,
        fc_name: str | None = "_fc",
        reg_bias_init: float | Sequence[float] | None = None,
        target_mean: float | None = None,
        target_std: float | None = None,
        pretrained_path: str | None = None,
        pretrained_key: str | None = None,
        pretrained_prefix: str = "",
        output_key: str | None = None,
        input_norm: nn.Module | None = None,
    ) -> None:
        if output_key not in (None, "pred", "embedding", "features"):
            raise ValueError(f"output_key must be None, 'pred', 'embedding' or 'features', got {output_key!r}.")
        backbone = remove_classifier(backbone, fc_name)
        load_pretrained_weights(backbone, pretrained_path, pretrained_key, pretrained_prefix)
        heads = {
            "pred": StandardizedRegressionHead(feature_dim, out_channels, target_mean, target_std, reg_bias_init),
            "embedding": ProjectionHead(feature_dim, proj_hidden, proj_dim),
        }
        super().__init__(_Features(backbone), heads, input_norm=input_norm, output_key=output_key)


class FoldEnsemble(nn.Module):
    """Average the outputs of the models of a cross-validation (AdaCon Table VI protocol: the four fold models).

    Each member returns a tensor (or a dict, averaged key by key). Shapes: as the members'.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("FoldEnsemble needs at least one model.")
        self.models = nn.ModuleList(models)

    @classmethod
    def from_checkpoints(
        cls, network: nn.Module, paths: Sequence[str], key: str | None = "model", map_location="cpu"
    ) -> FoldEnsemble:
        """Copies of ``network`` loaded from each of ``paths`` (checkpoints missing are an error naming them)."""
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"fold checkpoints not found: {missing}; train every fold first.")
        models = []
        for p in paths:
            m = copy.deepcopy(network)
            state = torch.load(p, map_location=map_location, weights_only=True)
            if key and isinstance(state, dict) and key in state:
                state = state[key]
            m.load_state_dict(state)
            models.append(m)
        return cls(models)

    def forward(self, x: torch.Tensor):
        outs = [m(x) for m in self.models]
        if isinstance(outs[0], dict):
            return {k: torch.stack([o[k] for o in outs]).mean(0) for k in outs[0]}
        return torch.stack(outs).mean(0)

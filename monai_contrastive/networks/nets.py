"""Whole networks: an encoder with named heads (the model contract of the trainer) and a fold ensemble."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Dict, List, Union

import torch
from torch import nn

from monai_contrastive.io import read_state_dict
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

    def forward(self, x: torch.Tensor) -> Union[Dict[str, torch.Tensor], torch.Tensor]:
        """The outputs of :class:`ContrastiveNet` (same keys and values), written so that ``torch.jit.script`` compiles
        it (model-zoo ``ckpt_export``): no keyword arguments, the heads called by name. Shapes: see the class."""
        if self.input_norm is not None:
            x = self.input_norm(x)
        features = self.encoder(x)
        key = self.output_key
        if key is not None:  # a None attribute is typed NoneType when scripted: compare only inside this branch
            if key == "features":
                return features
            if key == "pred":
                return self.heads["pred"](features)
            if key == "embedding":
                return self.heads["embedding"](features)
        return {
            "features": features,
            "pred": self.heads["pred"](features),
            "embedding": self.heads["embedding"](features),
        }


class FoldEnsemble(nn.Module):
    """Average the outputs of the models of a cross-validation (AdaCon Table VI protocol: the four fold models).

    Each member returns a tensor (or a dict, averaged key by key). Shapes: as the members'. The state dict holds
    member ``k``'s tensors under ``models.<k>.``; ``torch.jit.script`` compiles the ensemble when its members compile.

    Args:
        models: the member networks; or one network, copied ``num_models`` times (a config's ``network_def`` for a
            fold ensemble whose weights are loaded afterwards, e.g. from a bundle's ``models/model.pt``).
        num_models: the number of copies when ``models`` is one network.
    """

    def __init__(self, models: Sequence[nn.Module] | nn.Module, num_models: int | None = None) -> None:
        super().__init__()
        if isinstance(models, nn.Module):
            if num_models is None or int(num_models) < 1:
                raise ValueError(f"FoldEnsemble of one network needs num_models >= 1, got {num_models!r}.")
            models = [models] + [copy.deepcopy(models) for _ in range(int(num_models) - 1)]
        elif num_models is not None and int(num_models) != len(models):
            raise ValueError(f"FoldEnsemble got {len(models)} models but num_models={num_models}.")
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
            m.load_state_dict(read_state_dict(p, key, key_optional=True, map_location=map_location, what="checkpoint"))
            models.append(m)
        return cls(models)

    def load_weights(
        self, path: str | None = None, member_paths: Sequence[str] | None = None, key: str | None = "model"
    ) -> FoldEnsemble:
        """Load the ensemble's weights; return it.

        ``path`` (a bundle's ``models/model.pt``: the ensemble's state dict, plain or under ``key``) is used when it
        exists; otherwise ``member_paths``, one checkpoint per member (the fold models ``models/fold<k>/model.pt``
        that training writes). Either way every tensor must match (strict loading).

        Raises:
            FileNotFoundError: neither ``path`` nor every member checkpoint exists (the message names them).
            ValueError: ``member_paths`` has another length than the ensemble.
        """
        if path and os.path.isfile(path):
            self.load_state_dict(read_state_dict(path, key, key_optional=True, what="ensemble weights"))
            return self
        member_paths = list(member_paths or [])
        if len(member_paths) != len(self.models):
            raise ValueError(f"{len(self.models)} ensemble members but {len(member_paths)} member checkpoints given.")
        missing = [p for p in member_paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(
                f"no ensemble weights {path!r} and fold checkpoints not found: {missing}; train every fold first "
                "(or export the bundle, which writes the ensemble's models/model.pt)."
            )
        for m, p in zip(self.models, member_paths):
            m.load_state_dict(read_state_dict(p, key, key_optional=True, what="fold checkpoint"))
        return self

    def forward(self, x: torch.Tensor) -> Union[Dict[str, torch.Tensor], torch.Tensor]:
        tensors: List[torch.Tensor] = []
        dicts: List[Dict[str, torch.Tensor]] = []
        for m in self.models:
            o = m(x)
            if isinstance(o, torch.Tensor):
                tensors.append(o)
            else:
                dicts.append(o)
        if len(dicts) == 0:
            return torch.stack(tensors).mean(0)
        out: Dict[str, torch.Tensor] = {}
        for k in dicts[0].keys():
            out[k] = torch.stack([d[k] for d in dicts]).mean(0)
        return out

"""Heads and multi-task wrappers for contrastive regression (AdaCon, Dai et al., IEEE TMI, §III-C, Fig. 2)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionHead", "RegressionContrastiveNet", "FoldEnsemble", "load_backbone_weights"]

logger = logging.getLogger(__name__)


class ProjectionHead(nn.Module):
    """Contrastive projection: dense -> ReLU -> dense(out_dim) -> L2 normalisation (§III-C).

    Shapes: ``(B, in_dim)`` -> ``(B, out_dim)`` with unit rows.
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128) -> None:
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


def load_backbone_weights(module: nn.Module, path: str | None, key: str | None = None, prefix: str = "") -> None:
    """Load pretrained weights from a local file (no downloads). Keys missing on either side are logged.

    Args:
        module: the backbone.
        path: a ``.pt``/``.pth`` state dict (or a checkpoint dict holding one under ``key``); None/"" does nothing.
        key: the entry of the checkpoint holding the state dict, e.g. ``"model"`` or ``"state_dict"``.
        prefix: a key prefix to strip, e.g. ``"module."`` or ``"backbone."``.
    """
    if not path:
        return
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights not found: {path!r} (weights are never downloaded).")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if key:
        if key not in state:
            raise KeyError(f"pretrained weights {path!r} have no entry {key!r} (entries: {sorted(state)[:10]}).")
        state = state[key]
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(usable))
    missing = sorted(set(own) - set(usable))
    if not usable:
        raise ValueError(f"no tensor of {path!r} matches the backbone (first keys: {sorted(state)[:5]}).")
    module.load_state_dict(usable, strict=False)
    logger.info(f"loaded {len(usable)} tensors from {path}; {len(skipped)} skipped, {len(missing)} left as initialised")


class RegressionContrastiveNet(nn.Module):
    """A backbone with a regression head and a contrastive projection head (AdaCon Fig. 2).

    ``forward`` returns a dict: ``"pred"`` ``(B, out_channels)``, ``"embedding"`` ``(B, proj_dim)`` (unit length),
    ``"features"`` ``(B, feature_dim)``. With ``output_key`` set (inference, TorchScript export through tracing,
    ``verify_net_in_out``) it returns that tensor alone and skips the projection when it is not asked for.

    Args:
        backbone: any module mapping an image batch to features, e.g. MONAI ``EfficientNetBN`` (2D, 1 channel) or
            torchvision ``r2plus1d_18``; its classifier (attribute ``fc_name``) is replaced by the identity.
        feature_dim: size of the backbone features (1280 for EfficientNet-B1, 512 for R(2+1)D-18).
        out_channels: regression outputs.
        proj_hidden: hidden size of the projection head (default: ``feature_dim``).
        proj_dim: embedding size (128 in the paper).
        fc_name: dotted name of the backbone's classifier to remove ("_fc" for EfficientNetBN, "fc" for ResNets);
            None when the backbone already returns features.
        reg_bias_init: initial bias of the regression head, in label units (the authors' LVEF code sets it to the
            training mean EF, 55.6); ignored when ``target_mean`` is given.
        target_mean: mean of the training labels; with ``target_std`` the head predicts standardised labels and
            ``pred = target_std * head(features) + target_mean``. Both are buffers saved in the state dict. Without
            it one SGD step at lr 1e-2 moves an unscaled output by about ``lr * ||features||^2``, far more than the
            spread of BMD labels (sd 0.13 g/cm^2), and training from scratch diverges.
        target_std: standard deviation of the training labels (see ``target_mean``).
        pretrained_path: local file with backbone weights (never downloaded); see :func:`load_backbone_weights`.
        pretrained_key: entry of that file holding the state dict.
        pretrained_prefix: key prefix to strip from that state dict.
        output_key: return only this output.
        input_norm: a module applied to the input first, e.g. :py:class:`InputNormalization` so that uint8 videos
            are normalised on the device with statistics stored in the checkpoint.
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
        super().__init__()
        self.input_norm = input_norm
        if fc_name:
            parent = backbone
            *path, last = fc_name.split(".")
            for p in path:
                parent = getattr(parent, p)
            if not hasattr(parent, last):
                raise AttributeError(f"backbone {type(backbone).__name__} has no classifier {fc_name!r} to remove.")
            setattr(parent, last, nn.Identity())
        load_backbone_weights(backbone, pretrained_path, pretrained_key, pretrained_prefix)
        self.backbone = backbone
        self.regressor = nn.Linear(feature_dim, out_channels)
        self.register_buffer("target_mean", torch.tensor(float(target_mean) if target_mean is not None else 0.0))
        self.register_buffer("target_std", torch.tensor(float(target_std) if target_std else 1.0))
        if target_mean is not None:
            nn.init.zeros_(self.regressor.bias)
        elif reg_bias_init is not None:
            with torch.no_grad():
                self.regressor.bias.copy_(torch.as_tensor(reg_bias_init, dtype=torch.float32).expand(out_channels))
        self.projection = ProjectionHead(feature_dim, proj_hidden, proj_dim)
        if output_key not in (None, "pred", "embedding", "features"):
            raise ValueError(f"output_key must be None, 'pred', 'embedding' or 'features', got {output_key!r}.")
        self.output_key = output_key

    def forward(self, x: torch.Tensor):
        if self.input_norm is not None:
            x = self.input_norm(x)
        features = self.backbone(x)
        if features.ndim > 2:
            features = torch.flatten(features, 1)
        if self.output_key == "features":
            return features
        if self.output_key == "pred":
            return self.regressor(features) * self.target_std + self.target_mean
        embedding = self.projection(features)
        if self.output_key == "embedding":
            return embedding
        pred = self.regressor(features) * self.target_std + self.target_mean
        return {"pred": pred, "embedding": embedding, "features": features}


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
        import copy

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

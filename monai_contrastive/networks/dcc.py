"""Networks of DCC-CL (Lee et al., §3.2-3.3, §4.3): a ResNet encoder on the 2-channel organ patch (image + attention)
with a projection (or classification) head for pretraining, and the DeepLabV3+ that is fine-tuned on that encoder.

The encoder is segmentation-models-pytorch's (``encoder_weights=None``: nothing is downloaded), the very module the
fine-tuned ``segmentation_models_pytorch.DeepLabV3Plus`` holds as ``encoder``, so the pretrained weights load into the
segmentation network one to one (:func:`dcc_encoder_weights_prefix`). It keeps torchvision's 7x7 stride-2 stem,
which DeepLabV3+'s output stride (16) and decoder skip (stride 4) assume; the authors' code replaced it with a 3x3
stride-1 stem (CIFAR-style SimCLR), which would shift every feature level of the segmentation network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_contrastive.networks.heads import ProjectionHead
from monai_contrastive.networks.nets import ContrastiveNet

__all__ = [
    "ClassifierHead",
    "SMPEncoder",
    "coarse_logits",
    "dcc_encoder_weights_prefix",
    "dcc_pretraining_net",
    "dcc_segmentation_net",
    "load_coarse_network",
]


class SMPEncoder(nn.Module):
    """A segmentation-models-pytorch encoder returning its deepest feature map ``(B, F, H/32, W/32)``.

    Args:
        name: encoder name (``"resnet50"``: the paper's ResNet-50, ``F = 2048``; ``"resnet18"``: ``F = 512``).
        in_channels: input channels (2: image and organ attention map).
    """

    def __init__(self, name: str = "resnet50", in_channels: int = 2) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.encoder = smp.encoders.get_encoder(name, in_channels=in_channels, depth=5, weights=None)
        self.out_channels = int(self.encoder.out_channels[-1])

    def forward(self, x):
        return self.encoder(x)[-1]


class ClassifierHead(nn.Module):
    """Global average pooling and a linear classifier: ``(B, F, h, w)`` -> ``(B, num_classes)`` logits."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, num_classes)

    def forward(self, x):
        if x.ndim > 2:
            x = x.flatten(2).mean(2)
        return self.linear(x)


def dcc_pretraining_net(
    method: str = "dcc",
    encoder_name: str = "resnet50",
    in_channels: int = 2,
    proj_hidden: int | None = None,
    proj_dim: int = 256,
    num_organs: int = 13,
    num_phases: int = 4,
) -> ContrastiveNet:
    """The pretraining network of one row of Table 3 / 4: the encoder and the head(s) its loss reads.

    ``simclr``, ``dcc``, ``agcl``: ``embedding`` from a 2-layer MLP projection ``F -> proj_hidden -> proj_dim`` with
    L2 normalisation (§4.3 "a projection network with two linear layers"; 2048 -> 2048 -> 256 in the authors' code);
    ``ce``: ``organ_logits`` (``num_organs + 1`` classes, indexed by label value) and ``phase_logits``.
    """
    from monai_contrastive.losses.dcc import PRETRAIN_METHODS

    if method not in PRETRAIN_METHODS or method == "none":
        raise ValueError(f"pretraining method must be one of {PRETRAIN_METHODS[1:]}, got {method!r}.")
    encoder = SMPEncoder(encoder_name, in_channels)
    f = encoder.out_channels
    if method == "ce":
        heads = {"organ_logits": ClassifierHead(f, num_organs + 1), "phase_logits": ClassifierHead(f, num_phases)}
    else:
        heads = {"embedding": ProjectionHead(f, proj_hidden or f, proj_dim)}
    return ContrastiveNet(encoder, heads)


def dcc_segmentation_net(encoder_name: str = "resnet50", in_channels: int = 2, classes: int = 1, **kwargs) -> nn.Module:
    """``segmentation_models_pytorch.DeepLabV3Plus`` (ASPP decoder, §3.3) with no downloaded weights: one binary
    output per organ patch (logits ``(B, classes, H, W)``); ``kwargs`` go to ``DeepLabV3Plus``."""
    import segmentation_models_pytorch as smp

    kwargs["encoder_weights"] = None
    return smp.DeepLabV3Plus(encoder_name=encoder_name, in_channels=in_channels, classes=classes, **kwargs)


def dcc_encoder_weights_prefix() -> tuple[str, str]:
    """``(prefix, dst_prefix)`` mapping the pretraining network's encoder tensors onto the DeepLabV3+'s, for
    :func:`~monai_contrastive.networks.load_pretrained_weights`."""
    return "encoder.encoder.", "encoder."


def coarse_logits(network: nn.Module, image: torch.Tensor, spatial_size: Sequence[int]) -> torch.Tensor:
    """The coarse stage of §3.1 on whole volumes: ``image`` ``(B, 1, H, W, D)`` resized (trilinear) to the
    low-resolution ``spatial_size``, the 3D network, its class logits resized back to ``(B, C, H, W, D)``."""
    if image.ndim != 5:
        raise ValueError(f"coarse_logits: a (B, 1, H, W, D) volume expected, got {tuple(image.shape)}.")
    size = tuple(int(s) for s in spatial_size)
    low = F.interpolate(image.float(), size=size, mode="trilinear", align_corners=False)
    out = network(low)
    if isinstance(out, Mapping):
        out = out["pred"]
    return F.interpolate(out.float(), size=tuple(image.shape[2:]), mode="trilinear", align_corners=False)


def load_coarse_network(network: nn.Module, ckpt_path: str, num_classes: int, datalist: str | None = None) -> nn.Module:
    """Load the coarse network's plain state dict from ``ckpt_path`` into ``network`` (built for ``num_classes``
    label values, the datalist's), checking first that the checkpoint was trained for the same classes.

    Raises:
        FileNotFoundError: no checkpoint (train the coarse stage first: configs/coarse.json).
        ValueError: a tensor's shape differs, i.e. the checkpoint was trained for another organ count; the message
            names the checkpoint, both counts and the datalist.
    """
    if not ckpt_path or not os.path.isfile(ckpt_path):
        raise FileNotFoundError(
            f"coarse segmentation checkpoint {ckpt_path!r} not found; run configs/coarse.json first."
        )
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    own = network.state_dict()
    bad = [k for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        # a 1-D tensor of the output layer (its bias) holds the checkpoint's class count
        k = next((b for b in bad if own[b].ndim == 1 and own[b].shape[0] == num_classes), bad[0])
        saved = f" ({state[k].shape[0] - 1} organs)" if state[k].ndim == 1 else ""
        where = f" of datalist {datalist}" if datalist else ""
        raise ValueError(
            f"coarse checkpoint {ckpt_path} does not fit the {num_classes - 1} organs{where}: tensor {k!r} has "
            f"shape {tuple(state[k].shape)}{saved}, the coarse network for {num_classes} classes needs "
            f"{tuple(own[k].shape)}. Retrain the coarse stage on this datalist."
        )
    network.load_state_dict(state)
    return network.eval()

"""2D/3D U-Nets that return named features, and the fused global + local U-Net of LRC (Naushad 2022, §3.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from monai.networks.nets import BasicUNet
from torch import nn

from monai_contrastive.networks.weights import load_pretrained_weights

__all__ = ["FeatureUNet", "GlobalLocalUNet"]


class FeatureUNet(BasicUNet):
    """MONAI ``BasicUNet`` (instance normalisation after each convolution, as in the LRC thesis §3.1.1) that returns
    named features instead of logits.

    ``forward(x)`` returns ``{"features": bottleneck (B, features[4], *spatial / 16), "decoder": last decoder map
    (B, features[5], *spatial)}``. With ``encoder_only=True`` the decoder is not built and only ``"features"`` is
    returned: the latent encoder E_g of the global (MoCo) branch (§3.1.1: "the encoding half (left side) of a 2D
    U-Net"), whose weights load into the encoder of a full ``FeatureUNet`` by name.

    Args:
        spatial_dims: 2 (LRC, slices) or 3.
        in_channels: input channels.
        features: the six feature sizes of ``BasicUNet`` (encoder levels 0-4 and the last decoder level); the
            default is ``BasicUNet``'s (the thesis gives no widths).
        act: activation.
        norm: normalisation after each convolution (instance normalisation by default).
        dropout: dropout probability.
        upsample: ``"deconv"``, ``"pixelshuffle"`` or ``"nontrainable"``.
        encoder_only: build and run the encoder only.

    Shapes: input ``(B, in_channels, *spatial)``; sizes divisible by 16 keep every level even.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        dropout: float | tuple = 0.0,
        upsample: str = "deconv",
        encoder_only: bool = False,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=1,
            features=features,
            act=act,
            norm=norm,
            dropout=dropout,
            upsample=upsample,
        )
        self.final_conv = nn.Identity()
        self.encoder_only = encoder_only
        if encoder_only:  # no unused parameters (DDP) and no decoder tensors in the checkpoint
            self.upcat_4 = self.upcat_3 = self.upcat_2 = self.upcat_1 = None
        self.feature_channels = int(features[4])
        self.decoder_channels = int(features[5])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        if self.encoder_only:
            return {"features": x4}
        u4 = self.upcat_4(x4, x3)
        u3 = self.upcat_3(u4, x2)
        u2 = self.upcat_2(u3, x1)
        u1 = self.upcat_1(u2, x0)
        return {"features": x4, "decoder": u1}


class GlobalLocalUNet(nn.Module):
    """The fine-tuning network of LRC + MoCo (§3.2, Fig. 3.1): a global U-Net (encoder E_g with its own decoder D_g)
    and the local (LRC) U-Net (E_l, D_l); the outputs of their last decoder layers are concatenated and a 1x1
    convolution maps them to the classes.

    Initialisations (Table 4.2's rows): random; the global branch from a MoCo checkpoint (its encoder only, the
    decoder D_g stays random as in §3.2); the local branch from an LRC checkpoint; or both. A whole-network weights
    file is loaded with :func:`~monai_contrastive.networks.load_pretrained_weights` in the config.

    Args:
        spatial_dims: 2 in the thesis (slice-wise).
        in_channels: input channels.
        out_channels: classes including the background.
        features: ``BasicUNet`` feature sizes of each branch.
        global_weights: local file with a pretrained global encoder (e.g. the MoCo pretraining's ``model.pt``).
        local_weights: local file with a pretrained local U-Net (the LRC pretraining's ``model.pt``).
        weights_key: the entry of those files holding the state dict (None for a bare state dict).
        global_prefix: prefix of the global encoder's tensors in ``global_weights`` (stripped); the default fits a
            :class:`~monai_contrastive.networks.MomentumContrastNet` around a
            :class:`~monai_contrastive.networks.ContrastiveNet` whose encoder is an encoder-only ``FeatureUNet``.
        local_prefix: prefix of the local U-Net's tensors in ``local_weights`` (stripped); the default fits a
            ``ContrastiveNet`` whose encoder is the ``FeatureUNet``.

    Shapes: ``(B, in_channels, H, W)`` -> logits ``(B, out_channels, H, W)``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 14,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        global_weights: str | None = None,
        local_weights: str | None = None,
        weights_key: str | None = "model",
        global_prefix: str = "encoder.encoder.",
        local_prefix: str = "encoder.",
    ) -> None:
        super().__init__()
        self.global_unet = FeatureUNet(spatial_dims, in_channels, features)
        self.local_unet = FeatureUNet(spatial_dims, in_channels, features)
        self.head = Conv[Conv.CONV, spatial_dims](2 * int(features[5]), out_channels, kernel_size=1)
        # the global checkpoint holds an encoder only: decoder D_g stays randomly initialised (§3.2)
        load_pretrained_weights(self.global_unet, global_weights, weights_key, global_prefix)
        load_pretrained_weights(self.local_unet, local_weights, weights_key, local_prefix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.global_unet(x)["decoder"]
        loc = self.local_unet(x)["decoder"]
        return self.head(torch.cat([g, loc], dim=1))
